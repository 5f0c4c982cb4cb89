"""μP learning-rate transfer (Tensor Programs V, figure 1) on Tiny Shakespeare, characters.

Widths 32, 64, 128, 256, 512 (2 layers, 4 heads, so the head dim grows with width; d_ff =
4 d_model) x 5 Adam learning rates, under sp and under mup with base width 32. Each point trains 200 steps
of 16 x 64 tokens (cosine to lr/10 after 20 warmup steps) and reports the eval loss.

  python experiments/mup_transfer.py run runs/mup_transfer     # the grid, then table and plot
  python experiments/mup_transfer.py report runs/mup_transfer  # table and plot of a finished grid
  [--widths=32,64,128,256] [--seeds=0,1,2] [--steps=N] [--plot=PATH]    # a subset, seeds, horizon

`run` trains every point in one process and compiles one train step per (parametrization,
width), shared by the 5 learning rates: the step is lmjax.train.step.make_train_step over the
config's optimizer at lr 1 followed by optax.scale(lr) with lr held in the optimizer state
(optax.inject_hyperparams). AdamW's update is linear in its learning rate, so this is the same
update as the optimizer at that lr. The same points also run one process each with
`lmjax-sweep --config=experiments/mup_transfer.py --workdir=ROOT` (its results.csv is read by
`report` too), which on a shared 2-core CPU costs minutes of start-up and compile per point.

What it must show: under mup the best learning rate is the same grid point at every width, and
the loss at that learning rate falls with width; under sp the best learning rate moves down as
the model widens (or wide models diverge at the small model's best rate).

Measured here (`python experiments/mup_transfer.py run ROOT --widths=32,64,128,256`, one seed,
200 steps, 2-core CPU shared with other jobs: 1166 s; plot in experiments/mup_transfer.png):
  sp: eval loss by width (rows) and learning rate (columns)
    width   0.0025    0.005     0.01     0.02     0.04   best lr
       32   2.6212   2.5673   2.5804   2.7140   2.7515   0.005
       64   2.4950   2.4625   2.4550   2.7302   2.8878   0.01
      128   2.4097   2.3612   2.5345   2.6786   2.8589   0.005
      256   2.2246   2.4872   2.7421   2.9701   3.0743   0.0025
  mup: eval loss by width (rows) and learning rate (columns)
    width   0.0025    0.005     0.01     0.02     0.04   best lr
       32   2.6212   2.5673   2.5804   2.7140   2.7515   0.005
       64   2.6023   2.5492   2.5607   2.6481   2.7234   0.005
      128   2.6010   2.5449   2.5378   2.6781   2.8015   0.01
      256   2.6242   2.5784   2.7283   2.9329   2.9365   0.005
(Width 32 is the base width, where mup is sp.) `report` prints the verdict:
  sp:  best lr 0.005 0.01 0.005 0.0025: same grid point no; best loss falls with width yes
  mup: best lr 0.005 0.005 0.01 0.005: same grid point no; best loss falls with width no
So at this 200-step horizon the issue's bar is NOT met. Under mup the best rate is 5e-3 at 3 of
the 4 widths (at 128, 1e-2 beats it by 0.007, about one seed's noise), and the high rates
degrade more slowly with width than under sp (lr 4e-2: 2.75, 2.72, 2.80, 2.94 against sp's
2.75, 2.89, 2.86, 3.07); under sp the best rate falls to 2.5e-3 at 256, as the theory says it
must. But the loss at mup's best rate does not fall with width past 128 (2.567, 2.549, 2.545,
2.578), and sp reaches far lower losses at 256 (2.22): mup divides the hidden matrices' Adam
rate by the width multiplier (8 at 256) and, with the head count fixed here, shrinks the
attention scores by sqrt(K0)/K as the head dim grows (8 -> 64), so in 200 steps the wide mup
model has moved little from its init. `--steps=N` (a longer horizon, its own ROOT) and
`--seeds=0,1,2` (means with min-max bars) are the runs that would separate those effects from
noise; they have not been run yet.
The in-process runner's losses equal lmjax-sweep's (one lmjax-train process per point) to 4
decimals at lr 2.5e-3 and 5e-3 (2.6212, 2.5673); at lr 2e-2 they differ (2.714 vs 2.756), float
rounding of lr * update against update(lr), grown by an unstable run.
"""
import csv
import math
import os
import sys

import lmjax
from lmjax.config import base_config

WIDTHS = (32, 64, 128, 256, 512)
LRS = (2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2)
BASE_WIDTH = 32
PARAMETRIZATIONS = ("sp", "mup")
STEPS = 200
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
    m.use_bias, m.tie_embeddings = True, True
    m.mup_base_width = BASE_WIDTH
    t = c.train
    t.steps, t.batch_size, t.seq_len = steps, 16, 64
    t.eval_every, t.eval_steps, t.log_every = steps, 10, 20
    t.checkpoint_every, t.sample_tokens, t.progress = steps, 0, False
    o = c.optim
    o.warmup_steps, o.schedule, o.weight_decay, o.b2 = 20, "cosine", 0.1, 0.99
    c.data.path = os.path.join(os.path.dirname(lmjax.__file__), "data", "tinyshakespeare.txt")
    return c


def sweep(add, arg=None):
    for width in WIDTHS:  # narrow first, so a partial sweep has whole rows of both tables
        for param in PARAMETRIZATIONS:
            if param == "mup" and width == BASE_WIDTH:
                continue  # at its base width the mup model is the sp model (tests/test_mup.py)
            for lr in LRS:
                add(**{"model.parametrization": param, "model.d_model": width,
                       "model.d_ff": 4 * width, "optim.lr": lr, "optim.min_lr": lr / 10})


def point_key(row):
    return (row["model.parametrization"], int(row["model.d_model"]), float(row["optim.lr"]),
            int(row.get("seed") or 0))


def run_grid(root, widths=WIDTHS, seeds=(0,), steps=STEPS):
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
    sweep(lambda **o: points.append(o))
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


def read_results(root):
    """({(parametrization, width, lr): [eval loss of each seed]}, steps) from ROOT/results.csv
    (run or lmjax-sweep); the sp runs at the base width are the mup ones too."""
    out, steps = {}, set()
    with open(os.path.join(root, "results.csv")) as f:
        for row in csv.DictReader(f):
            steps.add(int(row.get("train.steps") or STEPS))
            loss = float(row["eval_loss"]) if row.get("eval_loss") else math.nan
            param, width, lr, _ = point_key(row)
            out.setdefault((param, width, lr), []).append(loss)
            if param == "sp" and width == BASE_WIDTH:
                out.setdefault(("mup", width, lr), []).append(loss)
    if len(steps) > 1:
        raise SystemExit(f"{root}/results.csv mixes horizons {sorted(steps)}")
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


def verdict(results):
    """The issue's bar, read off the table: under mup one best grid point at every width, and
    the loss at it falling monotonically with width."""
    lines = []
    for param in PARAMETRIZATIONS:
        best = best_lrs(results, param)
        widths = sorted(best)
        same = len({lr for _, lr in best.values()}) == 1
        falls = all(best[a][0] > best[b][0] for a, b in zip(widths, widths[1:]))
        lines.append(f"{param}: best lr {' '.join(f'{best[w][1]:g}' for w in widths)} at widths "
                     f"{' '.join(map(str, widths))}: same grid point {'yes' if same else 'no'}; "
                     f"best loss falls with width {'yes' if falls else 'no'}")
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
    parser.add_argument("root")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    parser.add_argument("--seeds", default="0", help="comma-separated init and data seeds")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps of each point")
    parser.add_argument("--plot", default=PLOT)
    args = parser.parse_args()
    widths = tuple(int(w) for w in args.widths.split(","))
    if not set(widths) <= set(WIDTHS):
        sys.exit(f"--widths={args.widths}: each must be one of {WIDTHS}")
    if args.command == "run":
        run_grid(args.root, widths, tuple(int(s) for s in args.seeds.split(",")), args.steps)
    results, steps = read_results(args.root)
    print(table(results))
    print(verdict(results))
    print("plot:", plot(results, steps, args.plot))


if __name__ == "__main__":
    main()
