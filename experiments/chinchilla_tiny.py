"""Chinchilla's compute-optimal scaling on a CPU: IsoFLOP profiles from WSD cooldown branches.

Nine GPT-2-style sizes, 74k to 1.86M parameters (6.6k to 1.25M without the tied 4096 x d
embedding: 190x), shaped as Chinchilla's table A9 scales them (depth and width grow together,
head size fixed at 16, d_ff = 4 d_model). Each size's stable phase (constant LR after a 200-step
warmup) runs in segments ending exactly at 80% of each of its budgets' D = C / 6N; that budget's
branch continues from there (lmjax.study.wsd) and decays the LR to 0 over the last 20% (1-sqrt
shape, Hägele et al. 2024), so every point's loss is at the end of its own decayed schedule.
Budgets are C = 6ND with N the total parameter count (embeddings included, as Chinchilla counts
them), a factor of 3 apart, each on the sizes around its optimum at ~20 tokens per parameter:
  C = 2.67e12 on s0-s3     C = 8e12 on s1-s4     C = 2.4e13 on s2-s6     C = 7.2e13 on s4-s8
18 branches and 18 stable-phase segments, 36 lmjax-sweep points; 4.4e14 FLOPs of 6ND trained
in all (5.2e14 if every branch had its own stable phase), D from 1.2M to 21.0M tokens.

Data: a 4096-piece SentencePiece BPE on 76 public-domain Project Gutenberg books (53.6 MB,
16.33M tokens; experiments/data/gutenberg_books.tar.xz and gutenberg_books_more.tar.xz,
experiments/data/gutenberg_books.SOURCE.txt names them); the eval set is 3 whole held-out books
(A Tale of Two Cities, Meditations, The Time Machine; 403k tokens, of which every eval reads the
same 65k), never windows of the training books. The largest D reads the corpus 1.3 times.

Learning rate: μP (model.parametrization = "mup", base width 64 = s3), so one rate holds at
every width: 6e-3, the best of the `:lr` sweep at s3, and checked at the study's own horizons.
Warmup: 200 steps, which reached a lower optimum loss at every budget than 100 (`:warmup100`).
AdamW's beta2: 0.99, likewise lower than 0.95 at every budget (`:b2_095`; Porian et al. 2024
found 0.95 too low at small batches, and this one is 2048 tokens); at 0.99 the `:lr` sweep
still picks 6e-3. How these were chosen, and the seed-noise and bootstrap-coverage checks,
with their commands and results: experiments/chinchilla_tiny_checks.md.

  mkdir -p data && tar -xJf experiments/data/gutenberg_books.tar.xz -C data
  tar -xJf experiments/data/gutenberg_books_more.tar.xz -C data
  lmjax-prepare --input=data/gutenberg/train --valid_files=data/gutenberg/valid \\
      --output=data/gutenberg_sp4k --tokenizer=sentencepiece --vocab_size=4096
  lmjax-sweep --config=experiments/chinchilla_tiny.py --workdir=runs/chinchilla_tiny --parallel=2
  python -m lmjax.study.wsd --config=experiments/chinchilla_tiny.py \\
      --workdir=runs/chinchilla_tiny --out=experiments/results/chinchilla_tiny
  lmjax-scaling --results=experiments/results/chinchilla_tiny/results.csv

The sweep is resumable (re-run the same command) and runs budget by budget, smallest first.
Variants: `:quick` runs the whole pipeline on sizes 1-3 and two budgets ~30x smaller (12 runs);
`:lr` sweeps the learning rate at size 3; `:lr_horizon` and `:lr_horizon_top` rerun some of
the study's branches at another rate (HORIZON_CHECKS); RERUNS repeat its budgets with another
seed, warmup or beta2 (`:seed1_b2_099`, `:b2_095`, `:seed1`, `:warmup100`, `:warmup100_seed1`,
`:warmup20`).

Measured here (2-core AMD EPYC), with glibc told to keep freed memory (MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=1000000000000 MALLOC_ARENA_MAX=1 in the environment, ~1.4x faster
steps for these sizes):
- `:quick`, all 12 runs through `lmjax-sweep --parallel=2`, then lmjax.study.wsd and
  lmjax-scaling: 4 min 18 s wall while another sweep held one core (2 min 36 s on an idle
  machine before). Results in experiments/results/chinchilla_tiny_quick/. At these budgets
  (55-380 steps per decayed run) both parabolas have their minimum inside their three sizes,
  but N_opt falls from 214k to 182k between them (a = -0.15) and Approach 3 is reported
  DEGENERATE (E at its bound): this checks the pipeline, not Chinchilla.
- The full study, all 36 points through `lmjax-sweep --parallel=2`: 1 h 46 min wall (the first
  three budgets in 48 min, the test suite running beside them for 11, the largest in 57 min).
  Results and figures in experiments/results/chinchilla_tiny/ (results.csv, curves.csv,
  fits.json, report.txt, isoflop.png, parametric.png, wsd_curves.png). They ran as the
  `:b2_099` variant before beta2 0.99 became the study's; every point names its warmup and
  beta2, so the commands above find and collect the same runs. Eval loss of the decayed
  branches:
      N \\ C      2.67e12          8e12             2.4e13           7.2e13
      74k        5.075 @ 6.0M
      161k       4.850 @ 2.8M     4.630 @ 8.3M
      259k       4.938 @ 1.7M     4.556 @ 5.1M     4.386 @ 15.4M
      370k       5.098 @ 1.2M     4.562 @ 3.6M     4.324 @ 10.8M
      572k                        4.668 @ 2.3M     4.298 @ 7.0M     4.131 @ 21.0M
      741k                                         4.336 @ 5.4M     4.089 @ 16.2M
      1.08M                                        4.413 @ 3.7M     4.089 @ 11.1M
      1.33M                                                         4.128 @ 9.0M
      1.86M                                                         4.186 @ 6.4M
  Approach 2 (bootstrap 5th-95th percentiles over the runs within each budget, 243 usable
  resamples of 1000; Hoffmann et al. 2022: a = b = 0.50, ~20 tokens per parameter):
      a = 0.520 [0.473, 0.528]   b = 0.480 [0.472, 0.527]
      N_opt 162k, 286k, 504k, 902k; tokens per parameter at the optimum 16.9 [16.8, 17.3],
      16.3 [14.7, 16.5], 15.7 [14.5, 17.1], 14.8 [13.9, 20.8]
    The residual bootstrap (`--bootstrap=residuals`) gives a in [0.506, 0.532], which stops
    0.006 short of 0.5. On this design, at one run's seed noise, the pairs intervals hold the
    true a in 0.90 of simulated studies and the residual ones in 0.84 (coverage.txt). At
    beta2 0.95 the same study gave a = 0.522 [0.498, 0.542] (`:b2_095`,
    experiments/results/chinchilla_tiny_b2_095/), its seed-1 rerun 0.536 [0.529, 0.545] and
    both seeds 0.529 [0.516, 0.542] (the checks file): 0.99 lowered 17 of the 18 losses, by
    0.031 on average, and moved no optimum by more than 1.2%. N_opt grows a little faster than
    D_opt at these sizes, and tokens per parameter fall from 17 to 15 over 27x in C.
    Its seed-1 rerun (`:seed1_b2_099`, 36 points; results in
    experiments/results/chinchilla_tiny_seed1_b2_099/) gives a = 0.517, [0.502, 0.594] by pairs
    and [0.473, 0.547] by residuals, N_opt 163k, 288k, 500k, 898k; both seeds' 72 runs
    together (experiments/results/chinchilla_tiny_b2_099_two_seeds/) give
    a = 0.519, [0.507, 0.531] by pairs and [0.506, 0.528] by residuals. So at this protocol a is
    0.52 within about 0.01, which is inside Hoffmann et al.'s own Approach 2 interval (0.49,
    [0.462, 0.534]); each seed's interval reaches 0.5 by one resampling scheme, their pooled
    intervals stop 0.006-0.007 short of it.
  Approach 3 (Huber on log L from a grid of inits, 200 bootstrap refits, 2% degenerate):
    E = 3.69 [3.04, 3.80], alpha = 0.653 [0.376, 0.833], beta = 0.622 [0.332, 0.802],
    A = 1502, B = 6397; Huber objective 7.0e-05 over 18 runs (parametric.png shows each run's
    residual); optimum a = 0.488 [0.346, 0.626], 17.1-18.5 tokens per parameter. Not
    degenerate: E > 0, no bound reached, alpha and beta in [0.2, 0.7], their intervals wide
    (18 points over ~1.4 decades of N and D). Hoffmann et al.: alpha 0.34, beta 0.28, E 1.69;
    Besiroglu et al. 2024: alpha 0.35, beta 0.37.
  Monotonicity (report.txt): loss falls with D at every N (0 violations in 9 pairs); the
    decayed loss falls with N at fixed D (0 violations in 9 adjacent-size pairs, each size's
    decayed losses interpolated in log D between its branches); along the stable phases, loss
    falls with N at fixed D in 56 of 62 pairs; the six violations are all at D <= 2.6M tokens
    (1,260 steps), the two largest (0.051 and 0.054, s2 to s3) at 0.48M and 0.72M tokens,
    34 and 151 steps after the warmup; the other four are each at most 0.015.
"""
from lmjax.config import base_config

VOCAB, SEQ, BATCH = 4096, 128, 16
TOKENS_PER_STEP = SEQ * BATCH
HEAD_DIM = 16
BASE_SIZE = "s3"  # μP's base width, where the `:lr` sweep tunes the learning rate
SIZES = {  # name: (num_layers, d_model)
    "s0": (2, 16), "s1": (2, 32), "s2": (2, 48), "s3": (2, 64),
    "s4": (3, 80), "s5": (3, 96), "s6": (4, 112), "s7": (4, 128), "s8": (5, 144),
}
# Four budgets a factor of 3 apart, each on the sizes around its optimum at ~20 tokens per
# parameter; a fifth, 3x larger one would alone take longer than the 3-hour limit on 2 cores.
BUDGETS = {8e12 / 3: ["s0", "s1", "s2", "s3"],
           8e12: ["s1", "s2", "s3", "s4"],
           2.4e13: ["s2", "s3", "s4", "s5", "s6"],
           7.2e13: ["s4", "s5", "s6", "s7", "s8"]}
QUICK_BUDGETS = {2.5e11: ["s1", "s2", "s3"], 7.5e11: ["s1", "s2", "s3"]}
LR = 6e-3  # the best of the `:lr` sweep at s3 (experiments/results/chinchilla_tiny_lr)
LR_SWEEP = (1e-3, 2e-3, 3e-3, 6e-3, 1.2e-2)
# `:lr_horizon` and `:lr_horizon_top`: the rate at the study's own horizons rather than the
# `:lr` sweep's 600 steps. Each reruns the study's branches of its sizes and budgets at its
# rates, sizes in the order listed: a small size and the base width over 586-5273 steps, then
# the largest budget's smallest and largest sizes (10251 and 3147 steps).
HORIZON_CHECKS = {  # variant: (sizes, budgets, rates)
    "lr_horizon": (("s1", "s3"), (8e12 / 3, 8e12, 2.4e13), (1.2e-2,)),
    "lr_horizon_top": (("s4", "s8"), (7.2e13,), (1.2e-2,)),
}
WARMUP = 200  # steps; 100 gave a higher optimum loss at every budget (`:warmup100`)
B2 = 0.99  # AdamW's beta2; 0.95 gave a higher optimum loss at every budget (`:b2_095`)
# The learning-rate checks (`:lr`, HORIZON_CHECKS), `:quick` and the reruns below but the first
# ran before 200 warmup steps and beta2 0.99 replaced 100 and 0.95, and keep those settings so
# that their commands reproduce their results.
CHECKS_WARMUP, CHECKS_B2 = 100, 0.95
# Reruns of the study's budgets with protocol settings changed (variant: (overrides, budgets)).
# A seed's pairs with its own protocol's study measure one run's noise (lmjax.study.seeds). The
# 100-step warmup is 17% of the shortest run (s3 at C = 2.67e12, 586 steps) but 3% of that
# budget's longest (s0, 2926), so the warmup weighs on the larger sizes of short budgets most.
# Porian et al. 2024 found beta2 = 0.95 too low at small batches; this one is 2048 tokens.
RERUNS = {
    "seed1_b2_099": ({"seed": 1}, tuple(BUDGETS)),  # the study itself with seed 1
    "b2_095": ({"optim.b2": CHECKS_B2}, tuple(BUDGETS)),
    "seed1": ({"optim.b2": CHECKS_B2, "seed": 1}, tuple(BUDGETS)),
    "warmup100": ({"optim.warmup_steps": 100, "optim.b2": CHECKS_B2}, tuple(BUDGETS)),
    "warmup100_seed1": ({"optim.warmup_steps": 100, "optim.b2": CHECKS_B2, "seed": 1},
                        tuple(BUDGETS)),
    "warmup20": ({"optim.warmup_steps": 20, "optim.b2": CHECKS_B2}, (8e12 / 3, 8e12)),
}
DATA = "data/gutenberg_sp4k"  # written by the lmjax-prepare command above


def get_config(arg=None):
    checks = (*HORIZON_CHECKS, *RERUNS)
    if arg not in (None, "quick", "lr", *checks):
        raise ValueError(f"unknown variant {arg!r}; use :quick, :lr, "
                         f"{', '.join(':' + v for v in checks)} or nothing")
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
    o.warmup_steps, o.b2 = WARMUP, B2
    o.decay_shape = "1-sqrt"
    o.weight_decay = 0.1
    c.metrics.tensorboard = False
    c.data.path = DATA
    c.data.tokenizer = "sentencepiece"
    if arg == "quick":
        t.eval_steps = 8
        o.warmup_steps, o.b2 = 10, CHECKS_B2
    if arg == "lr":
        o.schedule = "wsd"  # decayed over the last 20%, as the study's branches
        o.warmup_steps, o.b2 = CHECKS_WARMUP, CHECKS_B2
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
    """The stable runs and cooldown branches (lmjax.study.wsd.plan) of the study, `:quick`, a
    learning-rate check (HORIZON_CHECKS), or a rerun of some budgets (RERUNS)."""
    if arg in HORIZON_CHECKS:
        return horizon_points(arg)
    from lmjax.study import wsd
    # Every point names its warmup and beta2, so runs under other settings never share a sweep
    # name with it.
    budgets, extra = BUDGETS, {"optim.warmup_steps": WARMUP, "optim.b2": B2}
    if arg == "quick":
        budgets, extra = QUICK_BUDGETS, {}
    if arg in RERUNS:
        changed, chosen = RERUNS[arg]
        budgets, extra = {c: BUDGETS[c] for c in chosen}, {**extra, **changed}
    used = [s for s in SIZES if any(s in members for members in budgets.values())]
    counts = {s: num_params(s) for s in used}
    sizes = {s: (counts[s][0], {**size_overrides(s), **extra}) for s in used}
    points = wsd.plan(sizes, budgets, TOKENS_PER_STEP, cooldown=0.2)
    for p in points:
        p["num_params"], p["non_embedding_params"] = counts[p["size"]]
        p["tokens_per_step"] = TOKENS_PER_STEP
    return points


def horizon_points(variant: str) -> list[dict]:
    """The study's branches of HORIZON_CHECKS[variant]'s sizes and budgets, once per rate."""
    from lmjax.study import wsd
    sizes, budgets, rates = HORIZON_CHECKS[variant]
    members = {c: [s for s in sizes if s in BUDGETS[c]] for c in budgets}
    points = []
    for lr in rates:
        per_size = {s: (num_params(s)[0], {**size_overrides(s), "optim.lr": lr,
                                            "optim.warmup_steps": CHECKS_WARMUP,
                                            "optim.b2": CHECKS_B2})
                    for s in sizes}
        planned = wsd.plan(per_size, members, TOKENS_PER_STEP, cooldown=0.2)
        for p in planned:  # plan numbers its sources within its own list
            if p["source"] is not None:
                p["source"] += len(points)
            p["num_params"], p["non_embedding_params"] = num_params(p["size"])
            p["tokens_per_step"] = TOKENS_PER_STEP
        points += planned
    return points


def sweep(add, arg=None):
    if arg == "lr":
        for lr in LR_SWEEP:
            add(**{"optim.lr": lr})
        return
    from lmjax.study import wsd
    for overrides in wsd.sweep_overrides(study_points(arg)):
        add(**overrides)
