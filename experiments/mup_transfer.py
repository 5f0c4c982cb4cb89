"""μP learning-rate transfer (Tensor Programs V, figure 1) on Tiny Shakespeare, characters.

Widths 32, 64, 128, 256 (2 layers, 4 heads, so the head dim grows with width; d_ff = 4 d_model)
x 5 Adam learning rates, under sp and under mup with base width 32. Each point trains 250 steps
of 16 x 64 tokens (cosine to lr/10 after 25 warmup steps) and reports the eval loss.

  lmjax-sweep --config=experiments/mup_transfer.py --workdir=runs/mup_transfer
  python experiments/mup_transfer.py runs/mup_transfer   # the table below and the plot

What it must show: under mup the best learning rate is the same grid point at every width, and
the loss at that learning rate falls with width; under sp the best learning rate moves down as
the model widens (or wide models diverge at the small model's best rate).

RESULTS
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
    m.positions, m.norm, m.mlp, m.use_bias, m.tie_embeddings = "learned", "layernorm", "gelu", True, True
    m.mup_base_width = BASE_WIDTH
    t = c.train
    t.steps, t.batch_size, t.seq_len = 250, 16, 64
    t.eval_every, t.eval_steps, t.log_every = 250, 10, 25
    t.checkpoint_every, t.sample_tokens, t.progress = 250, 0, False
    o = c.optim
    o.warmup_steps, o.schedule, o.weight_decay, o.b2 = 25, "cosine", 0.1, 0.99
    c.data.path = os.path.join(os.path.dirname(lmjax.__file__), "data", "tinyshakespeare.txt")
    return c


def sweep(add, arg=None):
    for width in WIDTHS:  # narrow first, so a partial sweep has whole rows of both tables
        for param in PARAMETRIZATIONS:
            for lr in LRS:
                add(**{"model.parametrization": param, "model.d_model": width,
                       "model.d_ff": 4 * width, "optim.lr": lr, "optim.min_lr": lr / 10})


def read_results(root):
    """{(parametrization, width, lr): eval loss} from lmjax-sweep's ROOT/results.csv."""
    out = {}
    with open(os.path.join(root, "results.csv")) as f:
        for row in csv.DictReader(f):
            loss = float(row["eval_loss"]) if row.get("eval_loss") else math.nan
            out[(row["model.parametrization"], int(row["model.d_model"]),
                 float(row["optim.lr"]))] = loss
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
    axes[0].set_ylabel("eval loss after 250 steps")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python experiments/mup_transfer.py SWEEP_ROOT")
    results = read_results(sys.argv[1])
    print(table(results))
    print("plot:", plot(results))
