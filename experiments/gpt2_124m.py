"""GPT-2 124M on OpenWebText, nanoGPT's `train_gpt2.py` setting.

Expected: validation loss about 2.85 nats/token. Source: nanoGPT's README (karpathy/nanoGPT),
"gets to loss of about 2.85 within about 4 days" of its 600k-iteration schedule on 8x A100 40GB
with GPT-2's BPE. lmjax-prepare tokenizes with
SentencePiece, not GPT-2's BPE: train a BPE of GPT-2's size on the same text (below). Per-token
losses of two equal-size BPEs of one corpus are close, not identical, so compare within a few
hundredths, and compare curves of runs that share a tokenizer exactly.

Shapes (nanoGPT's GPTConfig with its padded vocabulary): 12 layers, 12 heads, d_model 768,
d_ff 3072, vocab 50304, context 1024, learned positions, LayerNorm, tanh-GELU, biases, tied
embeddings: 124,475,904 parameters (nanoGPT prints 123.65M without the position table).
Optimisation as nanoGPT: 491,520 tokens per step (batch 480 x 1024), AdamW lr 6e-4 -> 6e-5
cosine over 600k steps with 2000 warmup, weight decay 0.1 on matrices, betas (0.9, 0.95), clip 1.

Mesh: the model fits replicated on every chip, so the default is pure data parallelism.
  TPU v4-8 (4 chips, 32 GiB each):   --config=experiments/gpt2_124m.py:v4-8     (data=4)
  TPU v5e-8 (8 chips, 16 GiB each):  --config=experiments/gpt2_124m.py:v5e-8    (data=4, fsdp=2,
      with 2 gradient-accumulation microbatches: 16 GiB holds ~30 sequences of activations)

Commands (from nothing, see launch/README.md for the TPU VM steps):
  lmjax-prepare --input='openwebtext/*.txt' --output=data/owt --tokenizer=sentencepiece \\
      --vocab_size=50257 --valid_fraction=0.0005
  python launch/tpu_vm.py copy --name=gpt2 --zone=us-central2-b data/owt lmjax/data/owt
  python launch/tpu_vm.py run --name=gpt2 --zone=us-central2-b --accelerator_type=v4-8 -- \\
      lmjax-train --config=experiments/gpt2_124m.py:v4-8 --workdir=gs://BUCKET/gpt2_124m \\
      --config.data.path=data/owt
"""
from lmjax.config import base_config

VARIANTS = {
    None: {},
    "v4-8": {"mesh.data": -1, "mesh.fsdp": 1},
    "v5e-8": {"mesh.data": 4, "mesh.fsdp": 2, "optim.grad_accum_steps": 2},
}


def get_config(arg=None):
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r}; use one of "
                         f"{', '.join(v for v in VARIANTS if v)}")
    c = base_config()
    m = c.model
    m.num_layers, m.num_heads, m.d_model, m.d_ff = 12, 12, 768, 3072
    m.vocab_size = 50304  # 50257 rounded up to a multiple of 64, as nanoGPT
    m.max_seq_len = 1024
    m.positions, m.norm, m.mlp = "learned", "layernorm", "gelu"
    m.use_bias, m.tie_embeddings = True, True
    m.scan_layers = True
    m.remat_policy = "dots_with_no_batch_dims_saveable"
    m.dtype, m.param_dtype = "bfloat16", "float32"
    m.attention = "dot_product"

    t = c.train
    t.steps = 600_000
    t.batch_size, t.seq_len = 480, 1024
    t.eval_every, t.eval_steps = 2000, 5  # 5 x 480 = 2400 sequences, nanoGPT's 200 x 12
    t.log_every, t.checkpoint_every = 100, 2000
    t.keep_every = 50_000
    t.sample_tokens = 256

    o = c.optim
    o.lr, o.min_lr = 6e-4, 6e-5
    o.warmup_steps, o.decay_steps = 2000, 600_000
    o.weight_decay, o.decay_embeddings = 0.1, True
    o.b1, o.b2, o.grad_clip = 0.9, 0.95, 1.0

    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
    c.data.path = "data/openwebtext"  # a directory written by lmjax-prepare
    c.data.tokenizer = "sentencepiece"
    for field, value in VARIANTS[arg].items():
        group, leaf = field.split(".")
        c[group][leaf] = value
    return c
