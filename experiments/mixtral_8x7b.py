"""Mixtral 8x7B shapes (mixture of experts) pre-trained with expert parallelism on a TPU v5p pod.

Expected, checked by tests/test_moe_experiments.py: 46,702,792,704 parameters in all and
12,879,925,248 active per token (Mistral AI: 46.7B total, 12.9B active; HF transformers'
MixtralForCausalLM of the same config agrees on the total). Shapes: 32 layers, d_model 4096,
32 query heads and 8 key/value heads of 128 (GQA), 8 SwiGLU experts of d_ff 14336 per layer with
top-2 routing (softmax, then the two weights renormalised), RMSNorm, RoPE theta 1e6, no biases,
untied embeddings, vocab 32000.

FLOPs per token, and so the MFU lmjax-train prints, count the active parameters only (2 of 8
experts): 6 x 12.9B + attention, not 6 x 46.7B.

Mesh: the 8 experts of every layer are split over mesh.expert=8 (one expert per group of
chips); within an expert group, weights, gradients and Adam moments are sharded over fsdp.
The batch is split over data x expert x fsdp, so outside the MoE layers the expert axis is data
parallel, and each MoE layer exchanges tokens within its expert group (lmjax/model/moe.py).
Dropless routing (grouped matmuls) with the load-balancing loss at Mixtral's 0.02 and a small
router z-loss; bf16 compute, f32 master weights; layers scanned with matmul outputs saved.

Memory: 46.7B f32 weights + 2 Adam moments = 560 GB; over 64 chips about 8.8 GB per chip, plus
activations. Variants set the global batch for a slice:
  :v5p-128  (64 chips)   expert=8 x fsdp=8, batch 256 x 4096 = 1M tokens
  :v5p-256  (128 chips)  expert=8 x fsdp=16, batch 512 x 4096 = 2M tokens

Commands (see launch/README.md for creating the slice and preparing data):
  python launch/tpu_vm.py run --name=pod --zone=us-east5-a --accelerator_type=v5p-128 -- \\
      lmjax-train --config=experiments/mixtral_8x7b.py:v5p-128 \\
      --workdir=gs://BUCKET/mixtral_8x7b --config.data.path=data/corpus
"""
from lmjax.config import base_config

VARIANTS = {
    None: {"batch_size": 256},
    "v5p-128": {"batch_size": 256},
    "v5p-256": {"batch_size": 512},
}


def get_config(arg=None):
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r}; use one of "
                         f"{', '.join(v for v in VARIANTS if v)}")
    c = base_config()
    m = c.model
    m.num_layers, m.d_model, m.d_ff = 32, 4096, 14336
    m.num_heads, m.num_kv_heads, m.head_dim = 32, 8, 128
    m.vocab_size, m.max_seq_len = 32000, 32768
    m.positions, m.rope_theta = "rope", 1e6
    m.norm, m.norm_eps = "rmsnorm", 1e-5
    m.use_bias, m.tie_embeddings = False, False
    m.mlp = "moe"
    e = m.moe
    e.num_experts, e.top_k, e.d_ff = 8, 2, 14336
    e.renormalize = True
    e.dispatch = "dropless"
    e.aux_loss_coef, e.z_loss_coef = 0.02, 1e-3
    m.scan_layers = True
    m.remat_policy = "dots_with_no_batch_dims_saveable"
    m.dtype, m.param_dtype = "bfloat16", "float32"
    m.attention = "dot_product"
    c.mesh.data, c.mesh.expert, c.mesh.fsdp, c.mesh.tensor = 1, 8, -1, 1

    t = c.train
    t.seq_len = 4096
    t.batch_size = VARIANTS[arg]["batch_size"]
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
