"""μP learning-rate transfer (Tensor Programs V, figure 1) on Tiny Shakespeare, characters.

Widths 32, 64, 128, 256 (and 512 in the grid's definition) x 5 Adam learning rates, under sp and
under mup with base width 64. The model: 2 layers, 4 heads (so the head dim grows with width,
8 to 64), d_ff = 4 d_model, untied embeddings. Each point trains 600 steps of 16 x 64 tokens
(AdamW, b2 0.99, weight decay 0.1, 100 warmup steps, cosine to lr/10) from its seed's init and
data order and reports the eval loss.

  python experiments/mup_transfer.py run ROOT --seeds=0,1,2,3   # the grid, then table and plot
  python experiments/mup_transfer.py report ROOT [ROOT ...]     # table and plot, ROOTs merged
  python experiments/mup_transfer.py report experiments/results/mup_transfer  # the committed one
  [--widths=32,64,128,256] [--parametrizations=sp] [--seeds=0,1] [--steps=N] [--plot=PATH]

`run` trains every point in one process and compiles one train step per (parametrization,
width), shared by the 5 learning rates: the step is lmjax.train.step.make_train_step over the
config's optimizer at lr 1 followed by optax.scale(lr) with lr held in the optimizer state
(optax.inject_hyperparams). AdamW's update is linear in its learning rate, so this is the same
update as the optimizer at that lr. An interrupted `run` continues from ROOT/results.csv. The
same points also run one process each with `lmjax-sweep --config=experiments/mup_transfer.py
--workdir=ROOT` (its results.csv is read by `report` too), which costs start-up and a compile per
point.

What it must show: under mup the best learning rate is the same grid point at every width, and
the loss at that learning rate falls with width; under sp the best learning rate moves down as
the model widens.

Measured here: seeds 0-3, as 8 processes of `run` (one per parametrization and seed, e.g.
`run ROOT_sp0 --parametrizations=sp --seeds=0 --widths=32,64,128,256`, four at a time on the
2-core CPU), 47 min wall for the 140 points; merged in experiments/results/mup_transfer/
results.csv, plotted in experiments/mup_transfer.png:
  sp: eval loss by width (rows) and learning rate (columns), mean of 4 seeds
    width   0.0025    0.005     0.01     0.02     0.04   best lr
       32   2.3549   2.2728   2.2044   2.1567   2.1832   0.02
       64   2.2190   2.1369   2.1030   2.1054   2.1441   0.01
      128   2.0277   1.9866   2.0154   2.0996   2.1892   0.005
      256   1.9183   1.9970   2.4519   2.5291   2.8654   0.0025
  mup: eval loss by width (rows) and learning rate (columns), mean of 4 seeds
    width   0.0025    0.005     0.01     0.02     0.04   best lr
       32   2.2589   2.2031   2.1659   2.1756   2.2127   0.01
       64   2.2190   2.1369   2.1030   2.1054   2.1441   0.01
      128   2.1943   2.1021   2.0792   2.0803   2.1120   0.01
      256   2.1736   2.0938   2.0410   2.0541   2.0767   0.01
  seed spread (max - min eval loss of a point): median 0.0307, largest 0.0908
(Width 64 is the base width, where mup is sp.) `report` prints the verdict:
  sp:  best lr 0.02 0.01 0.005 0.0025: same grid point no; best loss falls with width yes;
       fitted optimum 0.0221 0.0135 0.00531 edge
  mup: best lr 0.01 0.01 0.01 0.01: same grid point yes; best loss falls with width yes;
       fitted optimum 0.0123 0.0135 0.0137 0.0123
Under mup the best rate is 1e-2 at every width and the loss there falls with width (2.166,
2.103, 2.079, 2.041); the fitted optimum (a parabola in log lr through the best point and its
neighbours) stays within 0.0123-0.0137. Under sp the best rate halves with every doubling of
the width, 2e-2 to 2.5e-3 (8x), and sp at 256 diverges towards 2.87 at mup's rate of 4e-2.

Read with care:
  - The margins at 64 and 128 are small beside the seed spread: 1e-2 beats 2e-2 by 0.0024 and
    0.0011. With seeds 0-1 alone, 128's best was 2e-2 (by 0.0015) and its best loss 2.0858 tied
    64's 2.0849, so the strict reading failed there; the fitted optimum, 0.0123, 0.0109, 0.0152,
    0.0131 on those two seeds, is the steadier statistic.
  - sp reaches lower losses than mup at 128 and 256 (1.987 and 1.918 against 2.079 and 2.041) at
    this 600-step horizon. μP fixes where the optimum is, not how far a wide model gets in a given
    number of steps; here its hidden matrices move at lr/m and, with the head count fixed, its
    attention scores shrink by sqrt(K0)/K as the head dim grows. Which of the two costs more was
    not separated.
  - With 20 warmup steps instead of 100 the points at 2e-2 and 4e-2 blew up on some seeds and not
    others (a spread of up to 0.35), which moved the argmin between seeds.
  - Tied embeddings hurt mup (see lmjax.model.parametrization): at width 256 over base 32,
    lr 5e-3 and 200 steps, 2.578 tied against 2.480 untied.
The in-process runner's losses equal lmjax-sweep's (one lmjax-train process per point) to 4
decimals where training is stable (checked at an earlier 200-step setting, lr 2.5e-3 and 5e-3).
"""
import csv
import math
import os
import sys

import lmjax
from lmjax.config import base_config

WIDTHS = (32, 64, 128, 256, 512)
LRS = (2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2)
BASE_WIDTH = 64
PARAMETRIZATIONS = ("sp", "mup")
STEPS = 600
PLOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mup_transfer.png")


def get_config(arg=None):
    """arg: none, or steps=N (a longer or shorter horizon, the same for every point)."""
    steps = STEPS
    if arg:
        key, _, value = arg.partition("=")
        if key != "steps" or not value.isdigit() or int(value) < 1:
            raise ValueError(f"unknown variant {arg!r}; use steps=N (N >= 1) or none")
        steps = int(value)
    c = base_config()
    m = c.model
    m.num_layers, m.num_heads, m.d_model, m.d_ff = 2, 4, BASE_WIDTH, 4 * BASE_WIDTH
    m.vocab_size, m.max_seq_len = 65, 64
    m.positions, m.norm, m.mlp = "learned", "layernorm", "gelu"
    # Untied: under mup a tied table is both the input embedding (lr and init unscaled) and the
    # readout (logits times 1/m), and its Adam step is ruled by the input path's larger gradient.
    # Tied, at width 256 over base 32 and lr 5e-3, the eval loss was 2.578 against 2.480 untied.
    m.use_bias, m.tie_embeddings = True, False
    m.mup_base_width = BASE_WIDTH
    t = c.train
    t.steps, t.batch_size, t.seq_len = steps, 16, 64
    t.eval_every, t.eval_steps, t.log_every = steps, 10, 20
    t.checkpoint_every, t.sample_tokens, t.progress = steps, 0, False
    o = c.optim
    o.warmup_steps, o.schedule, o.weight_decay, o.b2 = 100, "cosine", 0.1, 0.99
    c.data.path = os.path.join(os.path.dirname(lmjax.__file__), "data", "tinyshakespeare.txt")
    return c


def sweep(add, arg=None, parametrizations=PARAMETRIZATIONS):
    for width in WIDTHS:  # narrow first, so a partial sweep has whole rows of both tables
        for param in parametrizations:
            if param == "mup" and width == BASE_WIDTH:
                continue  # at its base width the mup model is the sp model (tests/test_mup.py)
            for lr in LRS:
                add(**{"model.parametrization": param, "model.d_model": width,
                       "model.d_ff": 4 * width, "optim.lr": lr, "optim.min_lr": lr / 10})


def point_key(row):
    return (row["model.parametrization"], int(row["model.d_model"]), float(row["optim.lr"]),
            int(row.get("seed") or 0))


def run_grid(root, widths=WIDTHS, seeds=(0,), steps=STEPS, parametrizations=PARAMETRIZATIONS):
    """Trains the grid's points at `widths`, each from every seed in `seeds` (its init and data
    order), in this process, skipping points already in ROOT/results.csv (so an interrupted
    run continues); writes that file with lmjax-sweep's column names."""
    import time

    import io as text_io

    import jax
    import optax

    from lmjax import config as config_lib, io, validation
    from lmjax.data import make_data
    from lmjax.model import build_model
    from lmjax.train import step as step_lib
    from lmjax.train.optim import make_optimizer
    from lmjax.train.state import TrainState, dummy_tokens, strip_boxes

    os.makedirs(root, exist_ok=True)
    rows, points = [], []
    csv_path = os.path.join(root, "results.csv")
    if os.path.exists(csv_path):
        with open(csv_path) as f:
            rows = list(csv.DictReader(f))
    other = {r.get("train.steps") or str(STEPS) for r in rows} - {str(steps)}
    if other:
        raise SystemExit(f"{csv_path} holds runs of {sorted(other)} steps, not {steps}: use "
                         "another ROOT for another horizon")
    done = {point_key(r) for r in rows}
    sweep(lambda **o: points.append(o), parametrizations=parametrizations)
    by_model = {}
    for p in points:
        if p["model.d_model"] in widths:
            by_model.setdefault((p["model.parametrization"], p["model.d_model"]), []).append(p)
    variant = None if steps == STEPS else f"steps={steps}"
    for (param, width), group in by_model.items():
        todo = [(p, seed) for seed in seeds for p in group
                if point_key({**p, "seed": seed}) not in done]
        if not todo:
            continue
        cfg = get_config(variant)
        config_lib.apply_overrides(cfg, {**group[0], "optim.lr": 1.0, "optim.min_lr": 0.1})
        validation.validate(cfg, 1)
        model = build_model(cfg.model)
        unit_tx, schedule = make_optimizer(cfg)
        tx = optax.chain(unit_tx, optax.inject_hyperparams(optax.scale)(step_size=1.0))
        train_step = jax.jit(step_lib.make_train_step(model, tx, schedule, cfg))
        eval_step = jax.jit(step_lib.make_eval_step(model, cfg))
        tokens = dummy_tokens(cfg)
        for point, seed in todo:
            lr = point["optim.lr"]
            cfg.seed = seed
            start = time.perf_counter()
            params = strip_boxes(model.init(jax.random.key(seed), tokens)["params"])
            opt_state = tx.init(params)
            opt_state[1].hyperparams["step_size"] = jax.numpy.asarray(lr, jax.numpy.float32)
            state = TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                               opt_state=opt_state)
            data = make_data(cfg, os.path.join(root, "data"))
            train = data.train
            for _ in range(cfg.train.steps):
                state, metrics = train_step(state, next(train))
            total, count = 0.0, 0.0
            for batch in data.eval_batches():
                s, c = eval_step(state.params, batch)
                total, count = total + float(s), count + float(c)
            eval_loss = total / max(count, 1.0)
            rows.append({"model.parametrization": param, "model.d_model": width, "optim.lr": lr,
                         "seed": seed, "train.steps": steps, "eval_loss": eval_loss,
                         "train_loss": float(metrics["train_loss"]),
                         "wall_time_s": time.perf_counter() - start})
            print(f"{param} d_model {width} lr {lr} seed {seed}: eval loss {eval_loss:.4f} "
                  f"({rows[-1]['wall_time_s']:.0f} s)", flush=True)
            # Atomically: an interrupted grid resumes from this file.
            table = text_io.StringIO()
            writer = csv.DictWriter(table, fieldnames=list(rows[-1]))
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in rows[-1]} for r in rows)
            io.write_text(csv_path, table.getvalue())


def read_results(*roots):
    """({(parametrization, width, lr): [eval loss of each seed]}, steps) from each ROOT's
    results.csv (run or lmjax-sweep); the sp runs at the base width are the mup ones too."""
    out, steps = {}, set()
    rows = []
    for root in roots:
        with open(os.path.join(root, "results.csv")) as f:
            rows += list(csv.DictReader(f))
    for row in rows:
        steps.add(int(row.get("train.steps") or STEPS))
        loss = float(row["eval_loss"]) if row.get("eval_loss") else math.nan
        param, width, lr, _ = point_key(row)
        out.setdefault((param, width, lr), []).append(loss)
        if param == "sp" and width == BASE_WIDTH:
            out.setdefault(("mup", width, lr), []).append(loss)
    if len(steps) > 1:
        raise SystemExit(f"results.csv of {', '.join(roots)} mix horizons {sorted(steps)}")
    return out, steps.pop()


def mean(results, key):
    losses = results.get(key, [])
    return sum(losses) / len(losses) if losses else math.nan


def measured_widths(results):
    return sorted({w for (_, w, _) in results if w in WIDTHS})


def best_lrs(results, param):
    """{width: (lowest mean eval loss over seeds, its lr)} over each width's finite points."""
    out = {}
    for width in measured_widths(results):
        finite = [(mean(results, (param, width, lr)), lr) for lr in LRS
                  if math.isfinite(mean(results, (param, width, lr)))]
        if finite:
            out[width] = min(finite)
    return out


def table(results):
    seeds = max(len(v) for v in results.values())
    lines = []
    for param in PARAMETRIZATIONS:
        best = best_lrs(results, param)
        lines.append(f"{param}: eval loss by width (rows) and learning rate (columns)"
                     + (f", mean of {seeds} seeds" if seeds > 1 else ""))
        lines.append("  width " + " ".join(f"{lr:>8.4g}" for lr in LRS) + "   best lr")
        for width in measured_widths(results):
            losses = [mean(results, (param, width, lr)) for lr in LRS]
            lines.append(f"  {width:>5} " + " ".join(f"{v:>8.4f}" for v in losses)
                         + f"   {best[width][1] if width in best else math.nan:.4g}")
    if seeds > 1:
        spreads = sorted(max(v) - min(v) for v in results.values() if len(v) > 1)
        lines.append(f"seed spread (max - min eval loss of a point): median "
                     f"{spreads[len(spreads) // 2]:.4f}, largest {spreads[-1]:.4f}")
    return "\n".join(lines)


def fitted_optimum(results, param, width):
    """The lr at the vertex of a parabola in log2(lr) through the lowest mean loss and its two
    neighbours on the grid: where between grid points the optimum lies, which a single seed's
    argmin cannot say. None when the lowest point is at the grid's edge."""
    losses = [mean(results, (param, width, lr)) for lr in LRS]
    finite = [i for i, v in enumerate(losses) if math.isfinite(v)]
    if not finite:
        return None
    i = min(finite, key=lambda j: losses[j])
    if i in (0, len(LRS) - 1) or not all(math.isfinite(losses[j]) for j in (i - 1, i + 1)):
        return None
    left, mid, right = losses[i - 1], losses[i], losses[i + 1]
    # Equal log2 spacing: the vertex's offset from the middle point, in grid steps.
    offset = 0.5 * (left - right) / (left - 2 * mid + right)
    return LRS[i] * (LRS[i + 1] / LRS[i]) ** offset


def verdict(results):
    """The bar, read off the table: under mup one best grid point at every width, and the loss
    at it falling monotonically with width; and each width's fitted optimum (fitted_optimum)."""
    lines = []
    for param in PARAMETRIZATIONS:
        best = best_lrs(results, param)
        widths = sorted(best)
        same = len({lr for _, lr in best.values()}) == 1
        falls = all(best[a][0] > best[b][0] for a, b in zip(widths, widths[1:]))
        fitted = [fitted_optimum(results, param, w) for w in widths]
        lines.append(f"{param}: best lr {' '.join(f'{best[w][1]:g}' for w in widths)} at widths "
                     f"{' '.join(map(str, widths))}: same grid point {'yes' if same else 'no'}; "
                     f"best loss falls with width {'yes' if falls else 'no'}; fitted optimum "
                     + " ".join("edge" if f is None else f"{f:.3g}" for f in fitted))
    return "\n".join(lines)


def plot(results, steps, out=PLOT):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, param in zip(axes, PARAMETRIZATIONS):
        for width in measured_widths(results):
            runs = [results.get((param, width, lr), []) for lr in LRS]
            means = [sum(r) / len(r) if r else math.nan for r in runs]
            spread = [[m - min(r) if r else 0 for m, r in zip(means, runs)],
                      [max(r) - m if r else 0 for m, r in zip(means, runs)]]
            ax.errorbar(LRS, means, yerr=spread, fmt="o-", capsize=3, label=f"d_model {width}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(LRS, [f"{lr:g}" for lr in LRS])
        ax.set_xticks([], minor=True)
        ax.set_xlabel("learning rate")
        ax.set_title(f"{param}" + (f" (base width {BASE_WIDTH})" if param == "mup" else ""))
        ax.grid(alpha=0.3)
    seeds = max(len(v) for v in results.values())
    axes[0].set_ylabel(f"eval loss after {steps} steps"
                       + (f" (mean, min-max of {seeds} seeds)" if seeds > 1 else ""))
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def main():
    import argparse
    parser = argparse.ArgumentParser(description="μP learning-rate transfer grid")
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("roots", nargs="+", metavar="ROOT",
                        help="run: the one results directory; report: one or more, merged")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    parser.add_argument("--parametrizations", default=",".join(PARAMETRIZATIONS))
    parser.add_argument("--seeds", default="0", help="comma-separated init and data seeds")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps of each point")
    parser.add_argument("--plot", default=PLOT)
    args = parser.parse_args()
    widths = tuple(int(w) for w in args.widths.split(","))
    if not set(widths) <= set(WIDTHS):
        sys.exit(f"--widths={args.widths}: each must be one of {WIDTHS}")
    params = tuple(args.parametrizations.split(","))
    if not set(params) <= set(PARAMETRIZATIONS):
        sys.exit(f"--parametrizations={args.parametrizations}: each must be one of "
                 f"{PARAMETRIZATIONS}")
    if args.command == "run":
        if len(args.roots) > 1:
            sys.exit("run takes one ROOT (run two processes on two ROOTs, then report both)")
        run_grid(args.roots[0], widths, tuple(int(s) for s in args.seeds.split(",")),
                 args.steps, params)
    results, steps = read_results(*args.roots)
    print(table(results))
    print(verdict(results))
    print("plot:", plot(results, steps, args.plot))


if __name__ == "__main__":
    main()
