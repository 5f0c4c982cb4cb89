"""Chinchilla's compute-optimal scaling on a CPU: IsoFLOP profiles from WSD cooldown branches.

Nine GPT-2-style sizes, 74k to 1.86M parameters (6.6k to 1.25M without the tied 4096 x d
embedding: 190x), shaped as Chinchilla's table A9 scales them (depth and width grow together,
head size fixed at 16, d_ff = 4 d_model). Each size's stable phase (constant LR after warmup)
runs in segments ending exactly at 80% of each of its budgets' D = C / 6N; that budget's branch
continues from there (lmjax.study.wsd) and decays the LR to 0 over the last 20% (1-sqrt shape,
Hägele et al. 2024), so every point's loss is at the end of its own decayed schedule. Budgets
are C = 6ND with N the total parameter count (embeddings included, as Chinchilla counts them),
a factor of 3 apart, each on the sizes around its optimum at ~20 tokens per parameter:
  C = 2.67e12 on s0-s3     C = 8e12 on s1-s4     C = 2.4e13 on s2-s6     C = 7.2e13 on s4-s8
18 branches and 18 stable-phase segments, 36 lmjax-sweep points; 4.4e14 FLOPs of 6ND trained
in all (5.2e14 if every branch had its own stable phase), D from 1.2M to 21.0M tokens.

Data: a 4096-piece SentencePiece BPE on 76 public-domain Project Gutenberg books (53.6 MB,
16.33M tokens; experiments/data/gutenberg_books.tar.xz and gutenberg_books_more.tar.xz,
experiments/data/gutenberg_books.SOURCE.txt names them); the eval set is 3 whole held-out books
(A Tale of Two Cities, Meditations, The Time Machine; 403k tokens, of which every eval reads the
same 65k), never windows of the training books. The largest D reads the corpus 1.3 times.

  mkdir -p data && tar -xJf experiments/data/gutenberg_books.tar.xz -C data
  tar -xJf experiments/data/gutenberg_books_more.tar.xz -C data
  lmjax-prepare --input=data/gutenberg/train --valid_files=data/gutenberg/valid \\
      --output=data/gutenberg_sp4k --tokenizer=sentencepiece --vocab_size=4096
  lmjax-sweep --config=experiments/chinchilla_tiny.py --workdir=runs/chinchilla_tiny --parallel=2
  python -m lmjax.study.wsd --config=experiments/chinchilla_tiny.py \\
      --workdir=runs/chinchilla_tiny --out=experiments/results/chinchilla_tiny
  lmjax-scaling --results=experiments/results/chinchilla_tiny/results.csv

The sweep is resumable (re-run the same command) and runs budget by budget, smallest first.
`:quick` runs the whole pipeline on sizes 1-3 and two budgets ~30x smaller (12 runs);
`:lr` sweeps the learning rate at size 3 (WSD over 600 steps).

Results at the two warmups the whole study has run with (details under "Warmup" and
"Measured here" below; Hoffmann et al. 2022: a = b = 0.50, ~20 tokens per parameter):
                          100 warmup steps (config)    200 warmup steps (`:warmup200`)
  Approach 2 a (pairs)    0.532 [0.514, 0.540]         0.522 [0.498, 0.542]
    (residuals)           0.517-0.544                  0.476-0.553
  tokens/param at N_opt   18.0, 17.9, 16.5, 14.6       16.8, 15.9, 15.8, 14.4
  optimum loss            4.898 4.597 4.339 4.134      4.888 4.585 4.335 4.129
  Approach 3              E 3.61, alpha 0.542,         E 3.67, alpha 0.598 [0.352, 0.759],
                          beta 0.579, a 0.517          beta 0.580 [0.348, 0.689], a 0.492
  decayed monotonicity    0 violations (9 + 9 pairs)   0 violations (9 + 9 pairs)
200 steps reach a lower optimum loss at every budget (and a lower loss at 12 of the 18
points, by 0.012 on average), so it is the better-tuned protocol of the two, and its 90%
interval for a reaches 0.5 (by 0.002). The two a differ by 0.010, well within what one run's
seed noise does to a (refits with it added spread a over [0.497, 0.557], below).

Learning rate: μP (model.parametrization = "mup", base width 64 = s3, head size fixed), so one
rate holds at every width. The `:lr` sweep at s3 (WSD over 600 steps, 1.2M tokens) chose it:
      lr         1e-3    2e-3    3e-3    6e-3    1.2e-2
      eval loss  5.392   5.214   5.134   5.123   5.345
  lmjax-sweep --config=experiments/chinchilla_tiny.py:lr --workdir=runs/chinchilla_tiny_lr
(experiments/results/chinchilla_tiny_lr/results.csv and .png), so LR = 6e-3.
The study's own horizons (586 to 10,251 steps) are longer than that sweep's 600, so the rate was
checked there too, on decayed eval loss:
- `:lr_horizon` reruns the study's branches of s1 and s3 up to C = 2.4e13 at 1.2e-2 (10 runs,
  15 min wall with `--parallel=2`; experiments/results/chinchilla_tiny_lr_horizon/):
      lmjax-sweep --config=experiments/chinchilla_tiny.py:lr_horizon \\
          --workdir=runs/chinchilla_tiny_lr_horizon --parallel=2
- the whole study at 3e-3 (the same command with `--config.optim.lr=3e-3` and
  `--workdir=runs/chinchilla_tiny_lr3e-3`); its first three budgets have run (26 of 36 points,
  experiments/results/chinchilla_tiny_lr3e-3/), the fourth's have not.
      size  D       steps   3e-3    6e-3    1.2e-2
      s1    2.8M    1351    4.900   4.897   4.947
      s1    8.3M    4053    4.682   4.681   4.701
      s3    1.2M     586    5.150   5.137   5.357
      s3    3.6M    1758    4.644   4.619   4.802
      s3    10.8M   5273    4.387   4.351   4.372
  (python -m lmjax.study.rates --results=3e-3=experiments/results/chinchilla_tiny_lr3e-3/results.csv
      --results=6e-3=experiments/results/chinchilla_tiny/results.csv --results=1.2e-2=\
      experiments/results/chinchilla_tiny_lr_horizon/results.csv --out=.../rates.png; the
  table and figure are in experiments/results/chinchilla_tiny_lr_horizon/rates.*.)
  6e-3 is the best of the three at every horizon. 1.2e-2's deficit at s3 shrinks with the
  horizon (0.22, 0.18, 0.02), so at the largest budget's 10k steps the optimum may lie above
  6e-3. Over all 13 decayed points of the first three budgets, 6e-3 beats 3e-3 at 11 (by up
  to 0.048, s5 at 5.4M; experiments/results/chinchilla_tiny_lr3e-3/rates.*, the same command
  with two --results); 3e-3 wins at s0 (by 0.009) and at s4 at 2.3M (by 0.004). On those
  three budgets, Approach 2 gives a = 0.519 [0.491, 0.594] at 6e-3 (lmjax-scaling on the
  study's results.csv without its C = 7.2e13 rows) and 0.515 [0.500, 0.546] at 3e-3
  (experiments/results/chinchilla_tiny_lr3e-3/report.txt): halving the rate moves a by 0.004,
  and both intervals reach 0.5. The fourth budget's N_opt, 907k against the 870k that the
  first three's line predicts at 7.2e13, is what lifts the full study's a and its interval.
- `:lr_horizon_top` reruns that budget's smallest and largest sizes at 1.2e-2 (4 runs, 45 min
  wall with `--parallel=2`; experiments/results/chinchilla_tiny_lr_horizon_top/):
      lmjax-sweep --config=experiments/chinchilla_tiny.py:lr_horizon_top \\
          --workdir=runs/chinchilla_tiny_lr_horizon_top --parallel=2
      size  D       steps   6e-3    1.2e-2
      s4    21.0M   10251   4.165   4.164
      s8    6.4M     3147   4.206   4.208
  1.2e-2 trails by 0.04-0.05 at the end of both stable phases and catches up in the
  cooldowns: the two rates tie at that budget's horizons (within 0.003), at its smallest size
  as at its largest. Taking the better rate at each of these points moves a by 0.001, so the
  rate is not what lifts that budget's N_opt. A rate tuned per budget (`python -m
  lmjax.study.tuned`: the one whose IsoFLOP profile reaches the lowest loss, among those that
  ran all the budget's sizes) is 6e-3 at each of the first three, by 0.011-0.028 over 3e-3;
  1.2e-2 has run all of no budget's sizes.

Warmup: `:warmup20` reruns the two smallest budgets (16 points, 15 min wall with
`--parallel=2`) with a 20-step warmup instead of 100, which the shortest runs spend 17% of their
steps in; `:warmup200` reruns the whole study with 200 (its first two budgets: 13 min). Results
in experiments/results/chinchilla_tiny_warmup20/ and _warmup200/, refitted by lmjax-scaling:
      lmjax-sweep --config=experiments/chinchilla_tiny.py:warmup20 \\
          --workdir=runs/chinchilla_tiny_warmup20 --parallel=2
      (and :warmup200 with --workdir=runs/chinchilla_tiny_warmup200)
      size  D       steps   warmup 20   100     200
      s0    6.0M    2926    5.050       5.082   5.090
      s1    2.8M    1351    5.008       4.898   4.868
      s2    1.7M     837    5.249       4.981   4.986
      s3    1.2M     586    5.379       5.137   5.095
      s1    8.3M    4053    4.698       4.681   4.672
      s2    5.1M    2510    4.706       4.605   4.592
      s3    3.6M    1758    4.818       4.619   4.597
      s4    2.3M    1139    5.004       4.767   4.704
      N_opt at 2.67e12 / 8e12   110k / 188k   157k / 273k   162k / 289k
      tokens per parameter      37 / 38       18 / 18       17 / 16
      a over these two budgets  0.488         0.501         0.525
  The larger a size, the longer the warmup it wants at this rate: 20 steps cost s1-s4
  0.1-0.27, and 200 beat 100 at 6 of the 8 points (by up to 0.06, s4) while s0 loses 0.008. So
  the study's fixed 100 steps hold its larger sizes back a little, and giving them more warmup
  raises both budgets' N_opt, the second's more: a over them rises with the warmup. Warmup
  moves where the optimum lies far more than how it scales, but not nothing (0.488-0.525).
  The whole `:warmup200` study (36 points; the last two budgets' 20 in 1 h 33 min wall with
  `--parallel=2`, the machine otherwise busy for a part of it):
      python -m lmjax.study.wsd --config=experiments/chinchilla_tiny.py:warmup200 \\
          --workdir=runs/chinchilla_tiny_warmup200 \\
          --out=experiments/results/chinchilla_tiny_warmup200
      lmjax-scaling --results=experiments/results/chinchilla_tiny_warmup200/results.csv
      N \\ C      2.67e12          8e12             2.4e13           7.2e13
      74k        5.090 @ 6.0M
      161k       4.869 @ 2.8M     4.672 @ 8.3M
      259k       4.986 @ 1.7M     4.592 @ 5.1M     4.413 @ 15.4M
      370k       5.095 @ 1.2M     4.597 @ 3.6M     4.358 @ 10.8M
      572k                        4.704 @ 2.3M     4.329 @ 7.0M     4.165 @ 21.0M
      741k                                         4.368 @ 5.4M     4.139 @ 16.2M
      1.08M                                        4.440 @ 3.7M     4.125 @ 11.1M
      1.33M                                                         4.161 @ 9.0M
      1.86M                                                         4.210 @ 6.4M
  Approach 2: N_opt 162k, 289k, 504k, 913k; a = 0.522 [0.498, 0.542], b = 0.478 [0.458,
  0.502] (222 usable resamples of 1000); tokens per parameter 16.8 [16.3, 19.0], 15.9 [14.5,
  16.1], 15.8 [14.8, 17.4], 14.4 [12.5, 16.8]. The first three budgets' N_opt rise 2.5-6% over
  the 100-step study's, the largest's 0.7%, so a falls from 0.532 to 0.522. Approach 3: E =
  3.67 [2.91, 3.78], alpha = 0.598 [0.352, 0.759], beta = 0.580 [0.348, 0.689], a = 0.492
  [0.368, 0.631], 16.3-17.2 tokens per parameter; not degenerate. Monotonicity: 0 violations
  of the decayed checks; 4 of 62 along the stable phases, all by at most 0.016 and below
  5.4M tokens.

Measured here (2-core AMD EPYC), with glibc told to keep freed memory (MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=1000000000000 MALLOC_ARENA_MAX=1 in the environment, ~1.4x faster
steps for these sizes):
- `:quick`, all 12 runs through `lmjax-sweep --parallel=2`, then lmjax.study.wsd and
  lmjax-scaling: 4 min 18 s wall while the full study's last point held one core (2 min 36 s
  on an idle machine before). Results in experiments/results/chinchilla_tiny_quick/. At these
  budgets (55-380 steps per decayed run) both parabolas have their minimum inside their three
  sizes, but N_opt falls from 214k to 182k between them (a = -0.15) and Approach 3 is reported
  DEGENERATE (E at its bound): this checks the pipeline, not Chinchilla.
- The full study, all 36 points through `lmjax-sweep --parallel=2`: 2 h 14 min wall, with
  other work on the machine for part of it (1 h 25 min on an idle machine for the same points
  on 28 of the books before). Results and figures in experiments/results/chinchilla_tiny/
  (results.csv, curves.csv, fits.json, report.txt, isoflop.png, parametric.png,
  wsd_curves.png). Eval loss of the decayed branches:
      N \\ C      2.67e12          8e12             2.4e13           7.2e13
      74k        5.082 @ 6.0M
      161k       4.898 @ 2.8M     4.681 @ 8.3M
      259k       4.981 @ 1.7M     4.605 @ 5.1M     4.423 @ 15.4M
      370k       5.137 @ 1.2M     4.619 @ 3.6M     4.351 @ 10.8M
      572k                        4.767 @ 2.3M     4.350 @ 7.0M     4.165 @ 21.0M
      741k                                         4.368 @ 5.4M     4.137 @ 16.2M
      1.08M                                        4.465 @ 3.7M     4.140 @ 11.1M
      1.33M                                                         4.155 @ 9.0M
      1.86M                                                         4.206 @ 6.4M
  Approach 2 (bootstrap 5th-95th percentiles, 256 usable resamples of 1000):
      a = 0.532 [0.514, 0.540]   b = 0.468 [0.460, 0.486]   (Hoffmann: 0.50 / 0.50)
      N_opt 157k, 273k, 492k, 907k; tokens per parameter at the optimum 18.0 [17.9, 18.1],
      17.9 [15.4, 18.4], 16.5 [14.1, 18.7], 14.6 [14.3, 16.2] (Chinchilla: ~20)
    a is inside [0.4, 0.6] but its 90% interval does not reach 0.5: N_opt grows a little
    faster than D_opt, and tokens per parameter fall from 18 to 15 over 27x in C. On 28 of
    the books (the largest D repeating them 4.3 times) the same study gave a = 0.548
    [0.523, 0.597] and 17 to 13 tokens per parameter: repetition was part of the bias.
    Halving the learning rate moves a by only 0.004, and doubling it at the largest budget's
    smallest and largest sizes changes their losses by at most 0.003 (the checks above).
  Seed noise: `:seed1` reruns all 36 points with seed 1 (other initial weights, another data
    order; the first three budgets' 26 in 38 min, the largest budget's 10 in 1 h 28 min, both
    with `--parallel=2` and other work on the machine). Its own fits (report.txt, figures),
    seeds.txt and seeds.png are in experiments/results/chinchilla_tiny_seed1/, both seeds'
    fits in experiments/results/chinchilla_tiny_two_seeds/:
      lmjax-sweep --config=experiments/chinchilla_tiny.py:seed1 \\
          --workdir=runs/chinchilla_tiny_seed1 --parallel=2
      python -m lmjax.study.wsd --config=experiments/chinchilla_tiny.py:seed1 \\
          --workdir=runs/chinchilla_tiny_seed1 --out=experiments/results/chinchilla_tiny_seed1
      lmjax-scaling --results=experiments/results/chinchilla_tiny_seed1/results.csv \\
          --curves=experiments/results/chinchilla_tiny_seed1/curves.csv
      python -m lmjax.study.seeds --results=experiments/results/chinchilla_tiny/results.csv \\
          --rerun=experiments/results/chinchilla_tiny_seed1/results.csv \\
          --merged=experiments/results/chinchilla_tiny_two_seeds
      lmjax-scaling --results=experiments/results/chinchilla_tiny_two_seeds/results.csv
    - Seed 1 alone gives a = 0.533 [0.524, 0.576] (195 usable resamples of 1000), N_opt 163k,
      280k, 502k, 942k, 16.8 to 13.5 tokens per parameter; Approach 3 alpha = 0.550 [0.172,
      0.708], beta = 0.572 [0.400, 0.714], E = 3.61, a = 0.510 [0.404, 0.747].
    - Its 18 decayed losses are 0.0121 lower on average (a seed also sets the data order every
      size reads, and a shift shared by a budget moves no minimum) and differ from seed 0's by
      -0.050 to +0.024 about that: one run's own noise is sigma = 0.0124 [0.0098, 0.0174] (90%,
      18 pairs). Refitting seed 0's Approach 2 with that noise added to every run gives a in
      [0.497, 0.557] (996 of 1000 refits).
    - Both seeds' 36 runs in one table (each parabola is then the one through the seeds'
      mean): a = 0.533 [0.523, 0.545], b = 0.467 [0.455, 0.477] (861 usable resamples), 17.4,
      17.5, 16.2 and 14.1 tokens per parameter; Approach 3 alpha = 0.527 [0.278, 0.613], beta
      = 0.547 [0.456, 0.618], E = 3.57, a = 0.509 [0.465, 0.640].
    So a = 0.53 is not one seed's noise: the two seeds give 0.532 and 0.533, and resampling
    their 36 runs leaves 0.5 outside the interval. At these sizes N_opt grows a little faster
    than D_opt; only the refits with seed noise (down to 0.497) and Approach 3 reach 0.5.
  How far the bootstrap interval can be trusted (lmjax.study.coverage: noise drawn about the
    study's own parabolas, refitted 199 times, each with both bootstraps of isoflop.RESAMPLERS;
    experiments/results/chinchilla_tiny/coverage.txt):
      python -m lmjax.study.coverage --results=experiments/results/chinchilla_tiny/results.csv \\
          --sigma=0.0124 --out=experiments/results/chinchilla_tiny/coverage.txt
    At the seeds' noise (sigma = 0.0124) the trials' own a spans [0.499, 0.557] (5th-95th)
    about the truth's 0.532, and the 90% intervals of both the pairs and the residual
    bootstrap (`lmjax-scaling --bootstrap=residuals`) hold the truth in 0.85 of trials, with a
    median width of 0.058-0.060. Seed 0's own interval, [0.514, 0.540], is less than half that
    wide because its profiles are smoother than the seeds' noise predicts: its residual
    sigma is 0.0058 (6 degrees of freedom), seed 1's 0.0127; at sigma = 0.0124 a residual sum
    that small has a probability of about 0.03. The residual bootstrap gives seed 0 [0.517,
    0.544], seed 1 [0.492, 0.563], both seeds [0.503, 0.552] (1000 resamples each). The
    interval the criterion names (resampling the runs) misses 0.5 for seed 0 by 0.014 at 100
    warmup steps; at 200 it reaches 0.5 (above).
  Approach 3 (Huber on log L, 200 bootstrap refits, 2% degenerate): E = 3.61 [2.55, 3.76],
    alpha = 0.542 [0.197, 0.683], beta = 0.579 [0.359, 0.786], A = 454, B = 3608; RMS
    residual 0.006 in log loss (parametric.png); optimum a = 0.517 [0.398, 0.773], 16.7-18.6
    tokens per parameter. Not degenerate: E > 0, no bound reached, alpha and beta in
    [0.2, 0.7], their intervals wide (18 points over ~1.4 decades of N and D).
  Monotonicity (report.txt): loss falls with D at every N (0 violations in 9 pairs); the
    decayed loss falls with N at fixed D (0 violations in 9 adjacent-size pairs, each size's
    decayed losses interpolated in log D between its branches); along the stable phases, loss
    falls with N at fixed D in 56 of 62 pairs. All six violations are s2 -> s3 (both 2
    layers) and s3 -> s4 (the first 3-layer size) at D <= 1.4M tokens, early in their
    constant-LR phases, where the larger model starts slower (μP transfers the rate across
    width, not depth); past 1.4M tokens every larger N is ahead.
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
# `:seed1`: the study rerun with another seed (other initial weights, another data order),
# whose pairs with the study measure one run's noise (lmjax.study.seeds).
SEED_CHECKS = {"seed1": (1, (8e12 / 3, 8e12, 2.4e13, 7.2e13))}  # variant: (seed, budgets)
# `:warmup20` reruns the two smallest budgets with a shorter warmup, `:warmup200` every budget
# with a longer one. The 100-step one is 17% of the shortest run (s3 at C = 2.67e12, 586 steps)
# but 3% of that budget's longest (s0, 2926), so it weighs on the larger sizes of short budgets
# most.
WARMUP_CHECKS = {"warmup20": (20, (8e12 / 3, 8e12)),  # variant: (warmup steps, budgets)
                 "warmup200": (200, tuple(BUDGETS))}
DATA = "data/gutenberg_sp4k"  # written by the lmjax-prepare command above


def get_config(arg=None):
    checks = (*HORIZON_CHECKS, *SEED_CHECKS, *WARMUP_CHECKS)
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
    """The stable runs and cooldown branches (lmjax.study.wsd.plan) of the study, `:quick`, a
    learning-rate check (HORIZON_CHECKS), or a rerun of some budgets with another seed
    (SEED_CHECKS) or another warmup (WARMUP_CHECKS)."""
    if arg in HORIZON_CHECKS:
        return horizon_points(arg)
    from lmjax.study import wsd
    budgets, extra = (QUICK_BUDGETS if arg == "quick" else BUDGETS), {}
    if arg in SEED_CHECKS:
        seed, chosen = SEED_CHECKS[arg]
        budgets, extra = {c: BUDGETS[c] for c in chosen}, {"seed": seed}
    if arg in WARMUP_CHECKS:
        warmup, chosen = WARMUP_CHECKS[arg]
        budgets, extra = {c: BUDGETS[c] for c in chosen}, {"optim.warmup_steps": warmup}
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
        per_size = {s: (num_params(s)[0], {**size_overrides(s), "optim.lr": lr}) for s in sizes}
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
