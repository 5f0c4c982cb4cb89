"""Chinchilla's compute-optimal scaling on a CPU: IsoFLOP profiles from WSD cooldown branches.

Seven GPT-2-style sizes, 74k to 1.08M parameters (6.6k to 608k without the tied 4096 x d
embedding: 92x), shaped as Chinchilla's table A9 scales them (depth and width grow together,
head size fixed at 16, d_ff = 4 d_model). Each size's stable phase (constant LR after warmup)
runs in segments ending exactly at 80% of each of its budgets' D = C / 6N; that budget's branch
continues from there (lmjax.study.wsd) and decays the LR to 0 over the last 20% (1-sqrt shape,
Hägele et al. 2024), so every point's loss is at the end of its own decayed schedule. Budgets
are C = 6ND with N the total parameter count (embeddings included, as Chinchilla counts them),
a factor of 3 apart, each on the sizes around its optimum at ~20 tokens per parameter:
  C = 2.67e12 on s0-s3        C = 8e12 on s1-s4        C = 2.4e13 on s2-s6
13 branches and 13 stable-phase segments, 26 lmjax-sweep points; 1.37e14 FLOPs of 6ND in all,
D from 1.2M to 15.4M tokens. (A fourth budget, 7.2e13 on s4-s8, was planned and dropped: at
the ~3-5k tokens/s these sizes train at here it alone would take ~2 hours.)

Data: a 4096-piece SentencePiece BPE on 28 public-domain Project Gutenberg books (16.4 MB,
4.87M tokens; experiments/data/gutenberg_books.tar.xz, experiments/data/
gutenberg_books.SOURCE.txt names them); the eval set is 3 whole held-out books (A Tale of Two
Cities, Meditations, The Time Machine; 406k tokens, of which every eval reads the same 65k),
never windows of the training books. The largest D repeats the corpus ~3.2 times.

  mkdir -p data && tar -xJf experiments/data/gutenberg_books.tar.xz -C data
  lmjax-prepare --input=data/gutenberg/train --valid_files=data/gutenberg/valid \\
      --output=data/gutenberg_sp4k --tokenizer=sentencepiece --vocab_size=4096
  lmjax-sweep --config=experiments/chinchilla_tiny.py --workdir=runs/chinchilla_tiny
  python -m lmjax.study.wsd --config=experiments/chinchilla_tiny.py \\
      --workdir=runs/chinchilla_tiny --out=experiments/results/chinchilla_tiny
  lmjax-scaling --results=experiments/results/chinchilla_tiny/results.csv

The sweep is resumable (re-run the same command) and runs budget by budget, smallest first.
`:quick` runs the whole pipeline on sizes 1-3 and two budgets ~30x smaller (12 runs);
`:lr` sweeps the learning rate at size 3 (WSD over 600 steps).

Learning rate: μP (model.parametrization = "mup", base width 64 = s3, head size fixed), so one
rate holds at every width. The `:lr` sweep at s3 (WSD over 600 steps, 1.2M tokens) chose it:
      lr         1e-3    2e-3    3e-3    6e-3    1.2e-2
      eval loss  5.412   5.250   5.178   5.136   5.201
  lmjax-sweep --config=experiments/chinchilla_tiny.py:lr --workdir=runs/chinchilla_tiny_lr
(experiments/results/chinchilla_tiny_lr/results.csv and .png), so LR = 6e-3.

Measured here (2-core CPU shared with several other jobs, load average 20-40 throughout: lmjax's
own matmul probe read 5-12 GFLOP/s, against ~100 on a quiet machine):
- `:quick` (before μP: standard parametrization at lr 3e-3), all 12 runs through lmjax-sweep:
  62 min wall (the <= 10 min target could not be timed on a quiet machine). Results in
  experiments/results/chinchilla_tiny_quick/ (results.csv, curves.csv, fits.json, report.txt,
  isoflop.png, parametric.png, wsd_curves.png). Eval loss of the decayed branches (nats/token):
      N \\ C     2.5e11                7.5e11
      161k      6.363 @ D=0.26M       5.624 @ D=0.78M
      259k      6.493 @ D=0.16M       5.724 @ D=0.48M
      370k      6.510 @ D=0.11M       6.022 @ D=0.34M
  Loss falls with D at every N (3 of 3 pairs), but at these budgets (100-380 steps) the
  smallest model is best at both: C = 2.5e11's parabola opens downwards and C = 7.5e11's
  minimum (178k, 4 tokens/param) has no usable bootstrap resample, so Approach 2 is
  DEGENERATE (one usable budget of the two it needs), and Approach 3 runs to its bounds
  (E -> 0, alpha -> 3): DEGENERATE, no result. This checks the pipeline, not Chinchilla.
- The full study (this file as it stands, μP at lr 6e-3), all 26 points through
  `lmjax-sweep --parallel=2` with glibc told to keep freed memory (MALLOC_MMAP_MAX_=0
  MALLOC_TRIM_THRESHOLD_=1000000000000 MALLOC_ARENA_MAX=1, ~1.4x faster steps for these sizes):
  1 h 52 min wall, sharing the cores with ~75 min of lmjax-plan compiles. Results, figures in
  experiments/results/chinchilla_tiny/ (results.csv, curves.csv, fits.json, report.txt,
  isoflop.png, parametric.png, wsd_curves.png). Eval loss of the decayed branches:
      N \\ C      2.67e12           8e12              2.4e13
      74k        5.117 @ 6.0M
      161k       4.934 @ 2.8M      4.767 @ 8.3M
      259k       5.007 @ 1.7M      4.692 @ 5.1M      4.538 @ 15.4M
      370k       5.147 @ 1.2M      4.674 @ 3.6M      4.464 @ 10.8M
      572k                         4.837 @ 2.3M      4.443 @ 7.0M
      741k                                           4.452 @ 5.4M
      1.08M                                          4.523 @ 3.7M
  Approach 2 (bootstrap 5th-95th percentiles, 241 usable resamples of 1000):
      a = 0.557 [0.536, 0.607]   b = 0.443 [0.393, 0.464]   (Hoffmann: 0.50 / 0.50)
      N_opt 161k, 282k, 546k; tokens per parameter at the optimum 17.2 [17.2, 17.4],
      16.8 [12.7, 17.9], 13.4 [10.7, 14.9] (Chinchilla: ~20)
    a is inside [0.4, 0.6] but its 90% interval (0.536-0.607) does not reach 0.5: N_opt grows
    a little faster than D_opt here, and tokens per parameter fall from 17 to 13 over 9x in C.
  Approach 3 (Huber on log L, 199 bootstrap refits, 6% degenerate): E = 4.08 [2.94, 4.30],
    alpha = 0.664 [0.247, 1.37], beta = 0.858 [0.427, 1.49], A = 1441, B = 1.27e5; optimum
    a = 0.564 [0.316, 0.80], 12.5-16.6 tokens per parameter. Not degenerate (E > 0, no bound
    reached) and alpha is in [0.2, 0.7], but beta is above 0.7 and both intervals are wide:
    13 points over one decade of N and D leave E, A/alpha and B/beta poorly separated.
  Monotonicity (report.txt): loss falls with D at every N (0 violations in 6 pairs); along the
    stable phases, loss falls with N at fixed D in 37 of 43 pairs. The 6 violations are at
    D <= 1.9M tokens, 5 of them s3 (2 layers) -> s4 (3 layers): the rate tuned at s3 under μP
    transfers across width, not depth, and the deeper model starts slower; by the budgets'
    branch points (D >= 2.3M) every larger N is ahead.
"""
from lmjax.config import base_config

VOCAB, SEQ, BATCH = 4096, 128, 16
TOKENS_PER_STEP = SEQ * BATCH
HEAD_DIM = 16
BASE_SIZE = "s3"  # μP's base width, where the `:lr` sweep tunes the learning rate
SIZES = {  # name: (num_layers, d_model)
    "s0": (2, 16), "s1": (2, 32), "s2": (2, 48), "s3": (2, 64),
    "s4": (3, 80), "s5": (3, 96), "s6": (4, 112),
}
# Three budgets a factor of 3 apart, each on the sizes around its optimum at ~20 tokens per
# parameter; the 3-hour limit on 2 cores rules out a fourth, 3x larger one (~2 h on its own).
BUDGETS = {8e12 / 3: ["s0", "s1", "s2", "s3"],
           8e12: ["s1", "s2", "s3", "s4"],
           2.4e13: ["s2", "s3", "s4", "s5", "s6"]}
QUICK_BUDGETS = {2.5e11: ["s1", "s2", "s3"], 7.5e11: ["s1", "s2", "s3"]}
LR = 6e-3  # the best of the `:lr` sweep at s3 (experiments/results/chinchilla_tiny_lr)
LR_SWEEP = (1e-3, 2e-3, 3e-3, 6e-3, 1.2e-2)
DATA = "data/gutenberg_sp4k"  # written by the lmjax-prepare command above


def get_config(arg=None):
    if arg not in (None, "quick", "lr"):
        raise ValueError(f"unknown variant {arg!r}; use :quick, :lr or nothing")
    c = base_config()
    m = c.model
    m.num_layers, m.d_model = SIZES[BASE_SIZE]
    m.num_heads, m.d_ff = m.d_model // HEAD_DIM, 4 * m.d_model
    m.vocab_size, m.max_seq_len = VOCAB, SEQ
    m.positions, m.norm, m.mlp = "learned", "layernorm", "gelu"
    # μP: one learning rate, tuned at s3 (the `:lr` sweep), transfers to every width. The head
    # size is fixed (heads grow with width), so head_dim is set for μP's attention scale.
    m.parametrization, m.mup_base_width = "mup", SIZES[BASE_SIZE][1]
    m.head_dim = HEAD_DIM
    t = c.train
    t.batch_size, t.seq_len = BATCH, SEQ
    t.steps = 1000
    t.eval_steps = 32  # 32 x 16 x 128 = 65k tokens of the held-out books, the same for every run
    t.eval_every = t.checkpoint_every = 100
    t.keep_checkpoints = 1
    t.log_every = 10
    t.sample_tokens = 0
    t.progress = False
    o = c.optim
    o.lr, o.min_lr = LR, 0.0
    o.warmup_steps = 100
    o.decay_shape = "1-sqrt"
    o.weight_decay = 0.1
    c.metrics.tensorboard = False
    c.data.path = DATA
    c.data.tokenizer = "sentencepiece"
    if arg == "quick":
        t.eval_steps = 8
        o.warmup_steps = 10
    if arg == "lr":
        o.schedule = "wsd"  # decayed over the last 20%, as the study's branches
        t.steps = 600
        t.eval_every = t.checkpoint_every = 600
    return c


def size_overrides(name: str) -> dict:
    layers, d_model = SIZES[name]
    return {"model.num_layers": layers, "model.d_model": d_model,
            "model.num_heads": d_model // HEAD_DIM, "model.d_ff": 4 * d_model}


def num_params(name: str) -> tuple[int, int]:
    """(total, without the token and position tables) parameters of a size.

    Counted in closed form, so that planning the sweep never starts jax (on an accelerator host
    that would hold the chips the points need); tests check it against the model's own count.
    """
    layers, d = SIZES[name]
    ff = 4 * d
    # Per layer: q, k, v, out kernels and biases; MLP kernels and biases; two norms.
    per_layer = 4 * d * d + 4 * d + 2 * d * ff + ff + d + 4 * d
    non_embedding = layers * per_layer + 2 * d  # and the final norm
    return non_embedding + (VOCAB + SEQ) * d, non_embedding


def study_points(arg=None) -> list[dict]:
    """The stable runs and cooldown branches (lmjax.study.wsd.plan) of the study or `:quick`."""
    from lmjax.study import wsd
    budgets = QUICK_BUDGETS if arg == "quick" else BUDGETS
    used = [s for s in SIZES if any(s in members for members in budgets.values())]
    counts = {s: num_params(s) for s in used}
    sizes = {s: (counts[s][0], size_overrides(s)) for s in used}
    points = wsd.plan(sizes, budgets, TOKENS_PER_STEP, cooldown=0.2)
    for p in points:
        p["num_params"], p["non_embedding_params"] = counts[p["size"]]
        p["tokens_per_step"] = TOKENS_PER_STEP
    return points


def sweep(add, arg=None):
    if arg == "lr":
        for lr in LR_SWEEP:
            add(**{"optim.lr": lr})
        return
    from lmjax.study import wsd
    for overrides in wsd.sweep_overrides(study_points(arg)):
        add(**overrides)
