"""A 1B LLaMA-shaped model (Llama 3.2 1B) pre-trained with FSDP on a TPU v5p or v6e pod.

Expected, checked by tests/test_experiments_full_size.py: 1,235,814,400 parameters, the count
of Meta's Llama 3.2 1B (model card: 1.23B; HF transformers' LlamaForCausalLM of the same config
agrees). Shapes: 16 layers, d_model 2048, 32 query heads and 8 key/value heads of 64 (GQA),
SwiGLU d_ff 8192, RMSNorm, RoPE theta 500000, no biases, tied embeddings, vocab 128256.

What to compare on a pod: the MFU lmjax-train prints in every log line (computed against the
chip's data-sheet peak, named in the log). MaxText publishes 43-65% MFU for Llama 8B-70B on v5p
and v6e; a 1B model has less compute per byte moved, so expect the lower end. There is no
published loss for this data, so loss targets come from your own baseline run.

Mesh: parameters, gradients and optimizer moments sharded over every chip (fsdp=-1, data=1);
bf16 compute, f32 master weights; layers scanned with dots saved for the backward pass.
Variants set the global batch for a slice (4M tokens is Llama 3's; these are smaller):
  :v5p-128  (64 chips)   batch 256 x 4096 = 1M tokens
  :v6e-256  (256 chips)  batch 512 x 4096 = 2M tokens

Commands (see launch/README.md for creating the slice and preparing data):
  lmjax-prepare --input='corpus/*.txt' --output=data/corpus --tokenizer=sentencepiece \\
      --vocab_size=128256
  python launch/tpu_vm.py copy --name=pod --zone=us-east5-a data/corpus lmjax/data/corpus
  python launch/tpu_vm.py run --name=pod --zone=us-east5-a --accelerator_type=v5p-128 -- \\
      lmjax-train --config=experiments/llama_1b.py:v5p-128 --workdir=gs://BUCKET/llama_1b \\
      --config.data.path=data/corpus
"""
from lmjax.config import base_config

VARIANTS = {
    None: {"batch_size": 256},
    "v5p-128": {"batch_size": 256},
    "v6e-256": {"batch_size": 512},
}


def llama_config(num_layers, d_model, num_heads, num_kv_heads, d_ff, tie_embeddings):
    """LLaMA 3 architecture in lmjax's fields; shared by llama_1b.py and llama_8b.py."""
    c = base_config()
    m = c.model
    m.num_layers, m.d_model, m.d_ff = num_layers, d_model, d_ff
    m.num_heads, m.num_kv_heads, m.head_dim = num_heads, num_kv_heads, d_model // num_heads
    m.vocab_size = 128256
    m.max_seq_len = 8192
    m.positions, m.rope_theta = "rope", 500000.0
    m.norm, m.norm_eps = "rmsnorm", 1e-5
    m.mlp, m.use_bias = "swiglu", False
    m.tie_embeddings = tie_embeddings
    m.scan_layers = True
    m.remat_policy = "dots_with_no_batch_dims_saveable"
    m.dtype, m.param_dtype = "bfloat16", "float32"
    m.attention = "dot_product"
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1

    t = c.train
    t.seq_len = 4096
    t.steps = 100_000
    t.eval_every, t.eval_steps = 1000, 10
    t.log_every, t.checkpoint_every = 10, 500
    t.keep_every = 10_000
    t.sample_tokens = 0

    o = c.optim
    o.lr, o.min_lr = 3e-4, 3e-5
    o.warmup_steps = 2000
    o.weight_decay = 0.1
    o.b1, o.b2, o.eps, o.grad_clip = 0.9, 0.95, 1e-8, 1.0

    c.data.path = "data/corpus"  # a directory written by lmjax-prepare
    c.data.tokenizer = "sentencepiece"
    return c


def get_config(arg=None):
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r}; use one of "
                         f"{', '.join(v for v in VARIANTS if v)}")
    c = llama_config(num_layers=16, d_model=2048, num_heads=32, num_kv_heads=8, d_ff=8192,
                     tie_embeddings=True)
    c.train.batch_size = VARIANTS[arg]["batch_size"]
    return c
