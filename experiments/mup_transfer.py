"""μP learning-rate transfer (Tensor Programs V, figure 1) on Tiny Shakespeare, characters.

Widths 32, 64, 128, 256 (2 layers, 4 heads, so the head dim grows with width; d_ff = 4 d_model)
x 5 Adam learning rates, under sp and under mup with base width 32. Each point trains 200 steps
of 16 x 64 tokens (cosine to lr/10 after 20 warmup steps) and reports the eval loss.

  python experiments/mup_transfer.py run runs/mup_transfer     # the grid, then table and plot
  python experiments/mup_transfer.py report runs/mup_transfer  # table and plot of a finished grid

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

Measured here (`python experiments/mup_transfer.py run ROOT`, 2-core CPU shared with other
jobs; plot in experiments/mup_transfer.png):
  sp: eval loss by width (rows) and learning rate (columns)
    width   0.0025    0.005     0.01     0.02     0.04   best lr
       32   2.6212   2.5673   2.5804   2.7140   2.7515   0.005
       64   2.4950   2.4625   2.4550   2.7302   2.8878   0.01
      128   2.4097   2.3612   2.5345   2.6786   2.8589   0.005
      256   2.2246   2.4872      nan      nan      nan   0.0025
  mup: eval loss by width (rows) and learning rate (columns)
    width   0.0025    0.005     0.01     0.02     0.04   best lr
       32   2.6212   2.5673   2.5804   2.7140   2.7515   0.005
       64   2.6023   2.5492   2.5615   2.6539   2.7331   0.005
      128   2.6010   2.5449   2.5378   2.6781   2.8015   0.01
      256      nan      nan      nan      nan      nan   nan
(Width 32 is the base width, where mup is sp; nan: not finished when this was measured.)
What it shows: under mup the loss at the best learning rate falls with width (2.567, 2.549,
2.538 at 32, 64, 128) and the best rate stays at 5e-3 to width 64, then moves one grid point to
1e-2 at 128, where 5e-3 is within 0.007; under sp the best rate moves 5e-3 -> 1e-2 -> 5e-3 and
the high rates degrade faster with width (lr 4e-2: 2.75, 2.89, 2.86 vs mup 2.75, 2.73, 2.80).
So the issue's bar (the same grid point at every width) is not met at 128 at this 200-step
horizon. At this horizon sp also reaches lower losses than mup at widths 64 and 128: mup divides
the hidden matrices' Adam rate by the width multiplier, the transfer rule, not a rate tuned for
this budget. The in-process runner's losses equal lmjax-sweep's (one lmjax-train process per
point) to 4 decimals at lr 2.5e-3 and 5e-3 (2.6212, 2.5673); at lr 2e-2 they differ (2.714 vs
2.756), float rounding of lr * update against update(lr), grown by an unstable run.
"""
import csv
import math
import os
import sys

import lmjax
from lmjax.config import base_config

WIDTHS = (32, 64, 128, 256)
LRS = (2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2)
BASE_WIDTH = 32
PARAMETRIZATIONS = ("sp", "mup")
PLOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mup_transfer.png")


def get_config(arg=None):
    if arg:
        raise ValueError(f"unknown variant {arg!r}; this experiment has none")
    c = base_config()
    m = c.model
    m.num_layers, m.num_heads, m.d_model, m.d_ff = 2, 4, BASE_WIDTH, 4 * BASE_WIDTH
    m.vocab_size, m.max_seq_len = 65, 64
    m.positions, m.norm, m.mlp = "learned", "layernorm", "gelu"
    m.use_bias, m.tie_embeddings = True, True
    m.mup_base_width = BASE_WIDTH
    t = c.train
    t.steps, t.batch_size, t.seq_len = 200, 16, 64
    t.eval_every, t.eval_steps, t.log_every = 200, 10, 20
    t.checkpoint_every, t.sample_tokens, t.progress = 200, 0, False
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


def run_grid(root):
    """Trains the grid in this process; writes ROOT/results.csv as lmjax-sweep would name it."""
    import time

    import jax
    import numpy as np
    import optax

    from lmjax import config as config_lib, validation
    from lmjax.data import make_data
    from lmjax.model import build_model
    from lmjax.train import step as step_lib
    from lmjax.train.optim import make_optimizer
    from lmjax.train.state import TrainState

    os.makedirs(root, exist_ok=True)
    rows = []
    points = []
    sweep(lambda **o: points.append(o))
    by_model = {}
    for p in points:
        by_model.setdefault((p["model.parametrization"], p["model.d_model"]), []).append(p)
    for (param, width), group in by_model.items():
        cfg = get_config()
        config_lib.apply_overrides(cfg, {**group[0], "optim.lr": 1.0, "optim.min_lr": 0.1})
        validation.validate(cfg, 1)
        model = build_model(cfg.model)
        unit_tx, schedule = make_optimizer(cfg)
        tx = optax.chain(unit_tx, optax.inject_hyperparams(optax.scale)(step_size=1.0))
        train_step = jax.jit(step_lib.make_train_step(model, tx, schedule, cfg))
        eval_step = jax.jit(step_lib.make_eval_step(model, cfg))
        data = make_data(cfg, os.path.join(root, "data"))
        tokens = np.zeros((1, cfg.train.seq_len), np.int32)
        params = jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x,
                              model.init(jax.random.key(cfg.seed), tokens)["params"],
                              is_leaf=lambda x: hasattr(x, "unbox"))
        for point in group:
            lr = point["optim.lr"]
            start = time.perf_counter()
            opt_state = tx.init(params)
            opt_state[1].hyperparams["step_size"] = jax.numpy.asarray(lr, jax.numpy.float32)
            state = TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                               opt_state=opt_state)
            train = make_data(cfg, os.path.join(root, "data")).train
            for _ in range(cfg.train.steps):
                state, metrics = train_step(state, next(train))
            total, count = 0.0, 0.0
            for batch in data.eval_batches():
                s, c = eval_step(state.params, batch)
                total, count = total + float(s), count + float(c)
            eval_loss = total / max(count, 1.0)
            rows.append({"model.parametrization": param, "model.d_model": width, "optim.lr": lr,
                         "eval_loss": eval_loss, "train_loss": float(metrics["train_loss"]),
                         "wall_time_s": time.perf_counter() - start})
            print(f"{param} d_model {width} lr {lr}: eval loss {eval_loss:.4f} "
                  f"({rows[-1]['wall_time_s']:.0f} s)", flush=True)
            with open(os.path.join(root, "results.csv"), "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)


def read_results(root):
    """{(parametrization, width, lr): eval loss} from ROOT/results.csv (run or lmjax-sweep)."""
    out = {}
    with open(os.path.join(root, "results.csv")) as f:
        for row in csv.DictReader(f):
            loss = float(row["eval_loss"]) if row.get("eval_loss") else math.nan
            key = (row["model.parametrization"], int(row["model.d_model"]), float(row["optim.lr"]))
            out[key] = loss
            if key[0] == "sp" and key[1] == BASE_WIDTH:
                out[("mup",) + key[1:]] = loss
    return out


def table(results):
    lines = []
    for param in PARAMETRIZATIONS:
        lines.append(f"{param}: eval loss by width (rows) and learning rate (columns)")
        lines.append("  width " + " ".join(f"{lr:>8.4g}" for lr in LRS) + "   best lr")
        for width in WIDTHS:
            losses = [results.get((param, width, lr), math.nan) for lr in LRS]
            finite = [(v, lr) for v, lr in zip(losses, LRS) if math.isfinite(v)]
            best = min(finite)[1] if finite else math.nan
            lines.append(f"  {width:>5} " + " ".join(f"{v:>8.4f}" for v in losses)
                         + f"   {best:.4g}")
    return "\n".join(lines)


def plot(results, out=PLOT):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, param in zip(axes, PARAMETRIZATIONS):
        for width in WIDTHS:
            ax.plot(LRS, [results.get((param, width, lr), math.nan) for lr in LRS], "o-",
                    label=f"d_model {width}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("learning rate")
        ax.set_title(f"{param}" + (f" (base width {BASE_WIDTH})" if param == "mup" else ""))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("eval loss after 200 steps")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("run", "report"):
        sys.exit("usage: python experiments/mup_transfer.py run|report ROOT")
    if sys.argv[1] == "run":
        run_grid(sys.argv[2])
    results = read_results(sys.argv[2])
    print(table(results))
    print("plot:", plot(results))
