"""Gemma 3 1B (google/gemma-3-1b-pt config.json): 999,885,952 parameters.

26 layers, five local (sliding window 512, RoPE theta 10000) then one global (RoPE theta
1000000), repeating; d_model 1152, 4 query heads and 1 key/value head of 256, scores scaled by
query_pre_attn_scalar 256 ** -0.5, QK-norm; (1 + w) RMSNorm eps 1e-6 before and after attention
and the MLP; GeGLU (tanh GELU) d_ff 6912; embeddings times sqrt(1152), tied; vocab 262144, 32768
positions. The count equals transformers' Gemma3ForCausalLM built from the same config
(tests/test_experiments_families.py).

Variants: `full` (default) as above; `reduced` the same features at CPU width on Tiny Shakespeare
(6 layers LLLLLG, window 16; 2 key/value heads so the reduced model splits over mesh.tensor=2):
  lmjax-train --config=experiments/gemma3_1b.py:reduced --workdir=runs/gemma3_reduced
"""
import os

from lmjax.config import load_module

# Experiment files are loaded by path, not as a package: load the shared builder the same way.
family_config = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "open_families.py")).family_config

GEMMA3_LAYERS = ("LLLLLG" * 5)[:26]  # layer_types: sliding unless (i + 1) % 6 == 0
PUBLISHED = dict(num_layers=26, d_model=1152, num_heads=4, num_kv_heads=1, head_dim=256,
                 d_ff=6912, vocab_size=262144, max_seq_len=32768, norm="gemma_rmsnorm",
                 norm_eps=1e-6, mlp="geglu", post_norms=True, scale_embeddings=True,
                 qk_norm=True, query_pre_attn_scalar=256.0, sliding_window=512,
                 local_layers=GEMMA3_LAYERS, rope_theta=1000000.0, rope_local_theta=10000.0,
                 tie_embeddings=True)
REDUCED = dict(num_layers=6, head_dim=16, query_pre_attn_scalar=16.0, sliding_window=16,
               local_layers="LLLLLG")


def get_config(arg=None):
    return family_config(arg, PUBLISHED, REDUCED)
