"""Llama 3.2 1B (meta-llama/Llama-3.2-1B config.json): 1,235,814,400 parameters.

16 layers, d_model 2048, 32 query and 8 key/value heads of 64, SwiGLU d_ff 8192, RMSNorm eps 1e-5,
tied embeddings, vocab 128256, RoPE theta 500000 with llama3 scaling (factor 32, low/high frequency
factors 1/4, original context 8192), 131072 positions. The count equals transformers'
LlamaForCausalLM built from the same config (tests/test_experiments_families.py).

Variants: `full` (default) as above; `reduced` the same features at CPU width on Tiny Shakespeare:
  lmjax-train --config=experiments/llama3_2_1b.py:reduced --workdir=runs/llama3_2_1b_reduced
Import the published weights with --config.init_from=hf:DIR (a local download of the model).
"""
import os

from lmjax.config import load_module

# Experiment files are loaded by path, not as a package: load the shared builder the same way.
family_config = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "open_families.py")).family_config

PUBLISHED = dict(num_layers=16, d_model=2048, num_heads=32, num_kv_heads=8, head_dim=64,
                 d_ff=8192, vocab_size=128256, max_seq_len=131072, norm_eps=1e-5,
                 rope_theta=500000.0, rope_scaling="llama3", rope_scaling_factor=32.0,
                 rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                 rope_original_max_seq_len=8192, tie_embeddings=True)
REDUCED = dict(head_dim=16, tie_embeddings=True)


def get_config(arg=None):
    return family_config(arg, PUBLISHED, REDUCED)
