"""Qwen 2.5 0.5B (Qwen/Qwen2.5-0.5B config.json): 494,032,768 parameters.

24 layers, d_model 896, 14 query and 2 key/value heads of 64 with biases on q, k and v (none on
the output), SwiGLU d_ff 4864, RMSNorm eps 1e-6, tied embeddings, vocab 151936, RoPE theta
1000000, 32768 positions, no sliding window (use_sliding_window false). The count equals
transformers' Qwen2ForCausalLM built from the same config (tests/test_experiments_families.py).

Variants: `full` (default) as above; `reduced` the same features at CPU width on Tiny Shakespeare:
  lmjax-train --config=experiments/qwen2_5_0_5b.py:reduced --workdir=runs/qwen2_5_reduced
"""
import os

from lmjax.config import load_module

# Experiment files are loaded by path, not as a package: load the shared builder the same way.
family_config = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "open_families.py")).family_config

PUBLISHED = dict(num_layers=24, d_model=896, num_heads=14, num_kv_heads=2, head_dim=64,
                 d_ff=4864, vocab_size=151936, max_seq_len=32768, norm_eps=1e-6,
                 rope_theta=1000000.0, qkv_bias=True, tie_embeddings=True)
REDUCED = dict(head_dim=16)


def get_config(arg=None):
    return family_config(arg, PUBLISHED, REDUCED)
