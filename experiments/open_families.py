"""Shared builder of the open-family experiments (llama3_2_1b.py, llama3_1_8b.py, qwen2_5_0_5b.py,
qwen3_0_6b.py, gemma3_1b.py, mistral_7b.py); not an experiment itself.

`family_config(arg, published, reduced)`: variant `full` (the default) is the published shape,
trained like llama_1b.py (bf16 compute, f32 weights, FSDP over every chip, scanned layers); variant
`reduced` keeps every architectural feature at a width that trains on a laptop CPU (2-6 layers,
d_model 64, vocab 128, sliding windows of 16 at seq 64) on the shipped Tiny Shakespeare.
"""
import os

import lmjax
from lmjax.config import base_config

VARIANTS = ("full", "reduced")
# What every reduced variant shares; families add their features on top.
REDUCED = dict(num_layers=2, d_model=64, num_heads=4, num_kv_heads=2, d_ff=128, vocab_size=128,
               max_seq_len=128)


def family_config(arg, published: dict, reduced: dict):
    arg = arg or "full"
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r}; use one of {', '.join(VARIANTS)}")
    c = base_config()
    m = c.model
    m.positions, m.norm, m.mlp, m.use_bias = "rope", "rmsnorm", "swiglu", False
    fields = dict(published)
    if arg == "reduced":
        fields.update(REDUCED)
        fields.update(reduced)
    for key, value in fields.items():
        m[key] = value
    m.scan_layers = True
    if arg == "full":
        m.remat_policy = "dots_with_no_batch_dims_saveable"
        m.dtype, m.param_dtype = "bfloat16", "float32"
        m.attention = "blockwise" if m.attn_logit_softcap else "dot_product"
        m.attention_block = 512
        c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
        t = c.train
        t.seq_len, t.batch_size, t.steps = 4096, 256, 100_000
        t.eval_every, t.eval_steps, t.log_every, t.checkpoint_every = 1000, 10, 10, 500
        t.keep_every, t.sample_tokens = 10_000, 0
        c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 3e-4, 3e-5, 2000
        c.data.path = "data/corpus"  # a directory written by lmjax-prepare, with its tokenizer
        c.data.tokenizer = "sentencepiece"
    else:
        m.attention, m.attention_block = "blockwise", 16
        t = c.train
        t.seq_len, t.batch_size, t.steps = 64, 16, 300
        t.eval_every, t.eval_steps, t.log_every, t.checkpoint_every = 100, 10, 10, 300
        c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 3e-3, 3e-4, 30
        c.data.path = os.path.join(os.path.dirname(lmjax.__file__), "data", "tinyshakespeare.txt")
        c.data.tokenizer = "char"
    return c

