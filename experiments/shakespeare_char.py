"""Character-level GPT on Tiny Shakespeare (nanoGPT's shakespeare_char), the default experiment.

Variants (the part after the colon):
  size=baby     nanoGPT's CPU settings: 4 layers, 4 heads, d_model 128, seq 64, batch 12,
                2000 steps, lr 1e-3 with 100 warmup steps and cosine decay to 1e-4, no dropout.
                lmjax-train --config=experiments/shakespeare_char.py --workdir=runs/sc
  size=default  nanoGPT's GPU settings: 6 layers, 6 heads, d_model 384, seq 256, batch 64,
                5000 steps, lr 1e-3, warmup 100, cosine to 1e-4, dropout 0.2.
                lmjax-train --config=experiments/shakespeare_char.py:size=default --workdir=runs/scd

The model is GPT-2 style with biases and the tanh GELU; nanoGPT's train.py defaults to no biases
and the exact GELU (`--config.model.use_bias=False --config.model.mlp=gelu_exact` gives that).

Expected (baby): eval loss <= 1.89 after 2000 steps; nanoGPT reaches 1.886 with these settings.
Measured here (2-core CPU): 1.8795 (benchmarks/train_throughput.py --sizes baby --train_to_end),
1.8762 in a separate run; with nanoGPT's no-bias, exact-GELU model 1.8898.
Expected (default): nanoGPT's README reports val 1.4697 after 5000 iterations on one A100, with
dropout 0.2 (on the embeddings, attention probabilities, attention and MLP outputs), as here.
Warmup follows nanoGPT's get_lr: lr * (step + 1) / (warmup + 1). The first 10 steps of default
side by side with nanoGPT's train.py (each from its own init and batches, so equal in
expectation, not digit for digit; `python benchmarks/nanogpt_losses.py --nanogpt_dir=PATH
--size default --steps 10 --every 1`, train loss of each step, then val loss on 20 batches):
    step      1      2      3      4      5      6      7      8      9     10   val
    lmjax  4.2425 4.0969 3.8549 3.6430 3.5070 3.4126 3.3487 3.2931 3.2593 3.1814 3.0903
  nanoGPT  4.2645 4.1227 3.8859 3.6663 3.5036 3.4251 3.3610 3.3244 3.2775 3.2338 3.1227

Speed on a 2-core CPU, side by side with nanoGPT (PyTorch, eager, 2 threads), from
`python benchmarks/train_throughput.py`: on an AMD Zen 4, baby 38.0 ms/step vs nanoGPT 38.4
(0.99x); default 8.63 s/step vs 7.66 (1.13x) at 3.3 GiB peak RSS vs 4.1 GiB, or with
`--config.model.remat_policy=full` 9.75 s/step at 1.9 GiB. On an Intel Xeon with AMX, baby
41.6 ms/step vs nanoGPT's train.py 29.6 (1.40x), where torch's small f32 matmuls are faster
than XLA's (benchmarks/matmul_shapes.py). Since default recomputes each layer and runs 4
microbatches of 16 (AMD Zen 4, 2 rounds in rotation with nanoGPT's train.py): 5.72 s/step vs
8.99 (1.57x tokens/s) at 1,105 MiB vs 3,623 without dropout; 7.06 s vs 11.63 (1.65x) at 1,306
MiB vs 6,601 with dropout 0.2. baby on the AMD Zen 4 (2 rounds of 100 steps, then whole
2000-step runs, `--sizes baby --steps 100 --train_to_end --nanogpt_dir=PATH`): 23.8 ms/step vs
nanoGPT's train.py 37.2 (0.64x); whole runs 79.2 s cold / 75.1 s warm compile cache vs 95.1 s
(0.83x / 0.79x), peak RSS 606 / 529 MiB vs 367 (README, Benchmarks). Dropout masks now come
from the counter hash (model.dropout_rng = "hash"): on a later, slower host default with
dropout 0.2 took 9.08 s/step against 10.52 with threefry's masks and 10.71 for nanoGPT's
train.py, and dropout no longer costs the step anything measurable. Default now keeps the
matmul outputs for its backward pass and runs 8 microbatches of 8: on a Zen 4 host, in rotation
with nanoGPT's train.py (`--sizes default --rounds 2 --nanogpt_dir=PATH`, then `--dropout 0`),
8.09 s/step vs 10.85 (1.34x tokens/s) at 1,022 MiB vs 6,505 with dropout 0.2, and 8.05 s vs
7.54 (0.94x) at 977 MiB vs 3,888 without; recomputing each layer over 4 microbatches of 16 took
9.42 and 9.19 s there.
"""
import os

import lmjax
from lmjax.config import base_config

SIZES = {
    "baby": dict(num_layers=4, num_heads=4, d_model=128, seq_len=64, batch_size=12, steps=2000,
                 dropout=0.0, remat_policy="dots_saveable", grad_accum_steps=1, xla_options=""),
    "default": dict(num_layers=6, num_heads=6, d_model=384, seq_len=256, batch_size=64, steps=5000,
                    dropout=0.2, remat_policy="dots_saveable", grad_accum_steps=8,
                    xla_options="xla_cpu_use_fusion_emitters=false"),
}


def get_config(arg=None):
    size = "baby"
    if arg:
        key, _, value = arg.partition("=")
        if key != "size" or value not in SIZES:
            raise ValueError(f"unknown variant {arg!r}; use size=baby or size=default")
        size = value
    s = SIZES[size]
    c = base_config()
    c.model.num_layers = s["num_layers"]
    c.model.num_heads = s["num_heads"]
    c.model.d_model = s["d_model"]
    c.model.d_ff = 4 * s["d_model"]
    c.model.vocab_size = 65  # the 65 distinct characters of the corpus
    c.model.max_seq_len = s["seq_len"]
    c.model.positions = "learned"
    c.model.norm = "layernorm"
    c.model.mlp = "gelu"
    c.model.use_bias = True
    c.model.tie_embeddings = True
    # Measured fastest on a 2-core CPU (benchmarks/train_throughput.py): layers under scan, and
    # at T=256 causal attention by query blocks. Both keep the matmul outputs for the backward
    # pass (recomputing only the cheap ops); default runs its batch of 64 as 8 microbatches of
    # 8, whose activations stay in cache, and which still split over 8 data devices: 0.86x the
    # step time of recomputing each layer over 4 microbatches of 16, at about the same peak
    # memory (AMD Zen 4, dropout 0.2). The update is the same: the loss averages over the
    # whole batch.
    c.model.scan_layers = True
    c.model.remat_policy = s["remat_policy"]
    c.optim.grad_accum_steps = s["grad_accum_steps"]
    c.model.attention = "blockwise" if s["seq_len"] > 64 else "einsum"
    c.model.attention_block = 64
    c.train.steps = s["steps"]
    c.train.batch_size = s["batch_size"]
    c.train.seq_len = s["seq_len"]
    c.train.eval_every = 250
    c.train.eval_steps = 20
    c.train.log_every = 10
    c.train.checkpoint_every = 500
    c.optim.lr = 1e-3
    c.optim.min_lr = 1e-4
    c.optim.warmup_steps = 100
    c.optim.weight_decay = 0.1
    c.optim.decay_embeddings = True  # as nanoGPT: every matrix decays, norms and biases do not
    c.optim.b2 = 0.99
    c.optim.grad_clip = 1.0
    c.model.dropout = s["dropout"]
    # Masks from a counter hash fused into the ops that use them, rather than threefry's while
    # loops on CPU: default compiles and steps faster (lmjax/model/dropout.py, README Benchmarks).
    c.model.dropout_rng = "hash"
    # default compiles with XLA:CPU's older fusion emitters: the same step time at 0.77x the
    # peak memory, which its compile sets; baby's steps were slower with them
    # (benchmarks/train_throughput.py, variants fusion_emitters=*). It is an XLA:CPU option; a
    # TPU compile accepts it (lmjax-plan --config=...:size=default --target=v5e-8).
    c.train.xla_options = s["xla_options"]
    c.data.path = os.path.join(os.path.dirname(lmjax.__file__), "data", "tinyshakespeare.txt")
    c.data.tokenizer = "char"
    c.data.valid_fraction = 0.1
    return c
