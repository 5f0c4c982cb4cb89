"""A small mixture-of-experts LLaMA on SentencePiece tokens of public-domain English books, and
the dense model of equal active parameters (`:dense`) trained on the same tokens.

MoE: 4 layers, d_model 128, 4 query heads sharing 2 key/value heads, RoPE, RMSNorm, untied
embeddings; every layer's MLP is 8 SwiGLU experts of width 192 with top-2 routing (dropless),
load-balancing loss 0.01 and router z-loss 1e-3. Dense: the same with one SwiGLU of width 384 =
2 x 192, so each token uses the same number of parameters. The data is prepared as for
experiments/gutenberg_llama.py (79 Project Gutenberg books, 8000-piece BPE):

  lmjax-prepare --input=CORPUS/train --valid_files=CORPUS/valid --output=data/gutenberg_en \\
      --tokenizer=sentencepiece --vocab_size=8000
  lmjax-train --config=experiments/gutenberg_moe.py --workdir=runs/gutenberg_moe
  lmjax-train --config=experiments/gutenberg_moe.py:dense --workdir=runs/gutenberg_dense

`data=DIR` after the colon (`:dense,data=DIR` for both) reads another prepared directory.

Result measured here, a short run only (2-core CPU shared with other jobs; both runs with
--config.train.steps=30 --config.train.eval_every=30 --config.train.eval_steps=5
--config.optim.warmup_steps=5, 30 x 16 x 128 = 61k tokens): MoE (4.61 M parameters, 2.84 M
active) eval loss 6.672, dense (2.84 M) eval loss 6.664, from ln(8000) = 8.99; equal within
noise at this length. Speed: MoE ~230 tokens/s against dense ~1,900: XLA:CPU expands ragged_dot
into a masked matmul per expert (8x the active expert FLOPs; see benchmarks/moe_throughput.py).
The default 150 steps were not run to the end here.
"""
from lmjax.config import base_config


def get_config(arg=None):
    data, dense = "data/gutenberg_en", False
    for part in (arg or "").split(","):
        key, _, value = part.partition("=")
        if part == "dense":
            dense = True
        elif key == "data" and value:
            data = value
        elif part:
            raise ValueError(f"unknown variant {part!r}; use dense and/or data=PREPARED_DIR")
    c = base_config()
    m = c.model
    m.vocab_size = 8000  # the tokenizer's size
    m.num_layers, m.d_model = 4, 128
    m.num_heads, m.num_kv_heads = 4, 2
    m.max_seq_len = 128
    m.positions, m.norm, m.use_bias, m.tie_embeddings = "rope", "rmsnorm", False, False
    m.mask_documents = True
    e = m.moe
    e.num_experts, e.top_k, e.d_ff = 8, 2, 192
    e.aux_loss_coef, e.z_loss_coef = 0.01, 1e-3
    m.d_ff = e.top_k * e.d_ff
    m.mlp = "swiglu" if dense else "moe"

    t = c.train
    t.steps = 150
    t.batch_size, t.seq_len = 16, 128
    t.eval_every, t.eval_steps = 75, 10
    t.checkpoint_every = 150
    t.sample_prompt = "It was"

    o = c.optim
    o.lr, o.min_lr = 3e-3, 3e-4
    o.warmup_steps = 20
    o.weight_decay = 0.1

    c.data.path = data
    c.data.tokenizer = "sentencepiece"
    c.data.vocab_size = 8000  # used only when data.path is raw text prepared on first use
    return c
