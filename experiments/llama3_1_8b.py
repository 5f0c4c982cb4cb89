"""Llama 3.1 8B (meta-llama/Llama-3.1-8B config.json): 8,030,261,248 parameters.

32 layers, d_model 4096, 32 query and 8 key/value heads of 128, SwiGLU d_ff 14336, RMSNorm eps
1e-5, untied embeddings, vocab 128256, RoPE theta 500000 with llama3 scaling (factor 8, low/high
frequency factors 1/4, original context 8192), 131072 positions. The count equals transformers'
LlamaForCausalLM built from the same config (tests/test_experiments_families.py).

Variants: `full` (default) as above; `reduced` the same features at CPU width on Tiny Shakespeare:
  lmjax-train --config=experiments/llama3_1_8b.py:reduced --workdir=runs/llama3_1_8b_reduced
"""
import os

from lmjax.config import load_module

# Experiment files are loaded by path, not as a package: load the shared builder the same way.
family_config = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "open_families.py")).family_config

PUBLISHED = dict(num_layers=32, d_model=4096, num_heads=32, num_kv_heads=8, head_dim=128,
                 d_ff=14336, vocab_size=128256, max_seq_len=131072, norm_eps=1e-5,
                 rope_theta=500000.0, rope_scaling="llama3", rope_scaling_factor=8.0,
                 rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                 rope_original_max_seq_len=8192, tie_embeddings=False)
REDUCED = dict(head_dim=16)


def get_config(arg=None):
    return family_config(arg, PUBLISHED, REDUCED)
