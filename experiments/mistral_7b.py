"""Mistral 7B v0.1 (mistralai/Mistral-7B-v0.1 config.json): 7,241,732,096 parameters.

32 layers, every one local with a sliding window of 4096; d_model 4096, 32 query and 8 key/value
heads of 128, SwiGLU d_ff 14336, RMSNorm eps 1e-5, no biases, untied embeddings, vocab 32000, RoPE
theta 10000, 32768 positions. The count equals transformers' MistralForCausalLM built from the
same config (tests/test_experiments_families.py).

Variants: `full` (default) as above; `reduced` the same features at CPU width on Tiny Shakespeare
(window 16 at seq 64):
  lmjax-train --config=experiments/mistral_7b.py:reduced --workdir=runs/mistral_reduced
"""
import os

from lmjax.config import load_module

# Experiment files are loaded by path, not as a package: load the shared builder the same way.
family_config = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "open_families.py")).family_config

PUBLISHED = dict(num_layers=32, d_model=4096, num_heads=32, num_kv_heads=8, head_dim=128,
                 d_ff=14336, vocab_size=32000, max_seq_len=32768, norm_eps=1e-5,
                 rope_theta=10000.0, sliding_window=4096, local_layers="all",
                 tie_embeddings=False)
REDUCED = dict(head_dim=16, sliding_window=16)


def get_config(arg=None):
    return family_config(arg, PUBLISHED, REDUCED)
