"""Qwen 3 0.6B (Qwen/Qwen3-0.6B config.json): 596,049,920 parameters.

28 layers, d_model 1024, 16 query and 8 key/value heads of 128 (head_dim decoupled from
d_model / heads = 64), RMSNorm QK-norm over each head before RoPE, SwiGLU d_ff 3072, RMSNorm eps
1e-6, no biases, tied embeddings, vocab 151936, RoPE theta 1000000, 40960 positions. The count
equals transformers' Qwen3ForCausalLM built from the same config
(tests/test_experiments_families.py).

Variants: `full` (default) as above; `reduced` the same features at CPU width on Tiny Shakespeare:
  lmjax-train --config=experiments/qwen3_0_6b.py:reduced --workdir=runs/qwen3_reduced
"""
import os

from lmjax.config import load_module

# Experiment files are loaded by path, not as a package: load the shared builder the same way.
family_config = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "open_families.py")).family_config

PUBLISHED = dict(num_layers=28, d_model=1024, num_heads=16, num_kv_heads=8, head_dim=128,
                 d_ff=3072, vocab_size=151936, max_seq_len=40960, norm_eps=1e-6,
                 rope_theta=1000000.0, qk_norm=True, tie_embeddings=True)
REDUCED = dict(head_dim=32)  # decoupled: 4 heads x 32 != d_model 64


def get_config(arg=None):
    return family_config(arg, PUBLISHED, REDUCED)
