"""Qwen3-30B-A3B shapes (mixture of experts) pre-trained with expert parallelism on a TPU pod.

Expected, checked by tests/test_moe_experiments.py: 30,532,122,624 parameters in all and
3,353,032,704 active per token (Qwen: 30.5B total, 3.3B active;
HF transformers' Qwen3MoeForCausalLM of the same config agrees on the total). Shapes: 48 layers,
d_model 2048, 32 query heads and 4 key/value heads of 128 (decoupled from d_model / heads), QK-norm
(RMSNorm over each head before RoPE), 128 SwiGLU experts of width 768 per layer with top-8
routing, top-8 weights renormalised (norm_topk_prob), RMSNorm, RoPE theta 1e6, no biases,
untied embeddings, vocab 151936.

FLOPs per token, and so the MFU lmjax-train prints, count the active parameters only (8 of 128
experts per layer).

Mesh: the 128 experts of every layer are split over mesh.expert=8 (16 experts per group of
chips), and within a group weights, gradients and Adam moments are sharded over fsdp. The batch
is split over data x expert x fsdp. Dropless routing with Qwen3's load-balancing coefficient
0.001 and a small router z-loss; bf16 compute, f32 master weights; layers scanned.

Memory: 30.5B f32 weights + 2 Adam moments = 366 GB; over 64 chips about 5.7 GB per chip, plus
activations. Variants set the global batch for a slice:
  :v5p-128  (64 chips)   expert=8 x fsdp=8, batch 256 x 4096 = 1M tokens
  :v6e-256  (256 chips)  expert=8 x fsdp=32, batch 1024 x 4096 = 4M tokens

Commands (see launch/README.md for creating the slice and preparing data):
  python launch/tpu_vm.py run --name=pod --zone=us-east5-a --accelerator_type=v5p-128 -- \\
      lmjax-train --config=experiments/qwen3_30b_a3b.py:v5p-128 \\
      --workdir=gs://BUCKET/qwen3_30b_a3b --config.data.path=data/corpus
"""
import os

from lmjax.config import load_module

VARIANTS = {
    None: {"batch_size": 256},
    "v5p-128": {"batch_size": 256},
    "v6e-256": {"batch_size": 1024},
}


def get_config(arg=None):
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r}; use one of "
                         f"{', '.join(v for v in VARIANTS if v)}")
    # Experiment files are loaded by path: reuse Mixtral's training setup the same way.
    mixtral = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                       "mixtral_8x7b.py"))
    c = mixtral.get_config(None)
    m = c.model
    m.num_layers, m.d_model, m.d_ff = 48, 2048, 6144
    m.num_heads, m.num_kv_heads, m.head_dim = 32, 4, 128
    m.qk_norm = True
    m.vocab_size, m.max_seq_len = 151936, 40960
    m.rope_theta, m.norm_eps = 1e6, 1e-6
    e = m.moe
    e.num_experts, e.top_k, e.d_ff = 128, 8, 768
    e.renormalize = True
    e.aux_loss_coef, e.z_loss_coef = 0.001, 1e-3
    c.train.batch_size = VARIANTS[arg]["batch_size"]
    return c
