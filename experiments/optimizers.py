"""The optimizers by name on shakespeare_char baby: AdamW, Adafactor, Lion and Muon, one table.

shakespeare_char's baby model and data (4 layers, d_model 128, seq 64, batch 12) for 600 steps
instead of 2000, cosine to lr/10 after 100 warmup steps; each optimizer at the learning rate
its authors recommend relative to AdamW's:
  adamw      lr 1e-3 (nanoGPT's), weight decay 0.1
  adafactor  lr 1e-3 (absolute steps, no parameter scaling, no first moment), weight decay 0.1
  lion       lr 1e-4 and weight decay 1.0 (Chen et al. 2023: 3-10x smaller lr, larger decay)
  muon       Muon lr 0.02 (momentum 0.95, Nesterov) on the hidden matrices, AdamW lr 1e-3 on
             the embedding, norms and biases (modded-nanogpt, Moonlight)

  python experiments/optimizers.py run runs/optimizers     # lmjax-train's loop per point,
                                                           # in one process; then the table
  lmjax-sweep --config=experiments/optimizers.py --workdir=runs/optimizers   # or one process
  python experiments/optimizers.py report runs/optimizers  # each, then the table below

Measured here (`python experiments/optimizers.py run ROOT`, 2-core CPU shared with other jobs):
  | optimizer | eval loss | train loss | wall s |
  |---|---|---|---|
  | adamw | 2.2440 | 2.2567 | 1245 |
  | adafactor | 2.3017 | 2.3176 | 979 |
  | lion | 2.4372 | 2.4623 | 157 |
  | muon | 1.8451 | 1.7642 | 210 |
Muon ends 0.40 nats below AdamW at the same 600 steps, as modded-nanogpt reports Muon ahead of
AdamW; Adafactor (no first moment) and Lion at these untuned rates are behind AdamW.
"""
import csv
import os
import sys

from lmjax.config import load_module

shakespeare_char = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                            "shakespeare_char.py"))

STEPS = 600
POINTS = {
    "adamw": {"optim.lr": 1e-3, "optim.min_lr": 1e-4},
    "adafactor": {"optim.lr": 1e-3, "optim.min_lr": 1e-4},
    "lion": {"optim.lr": 1e-4, "optim.min_lr": 1e-5, "optim.weight_decay": 1.0},
    "muon": {"optim.lr": 1e-3, "optim.min_lr": 1e-4, "optim.muon_lr": 0.02},
}


def get_config(arg=None):
    if arg:
        raise ValueError(f"unknown variant {arg!r}; this experiment has none")
    c = shakespeare_char.get_config("size=baby")
    c.train.steps = STEPS
    c.train.eval_every = STEPS
    c.train.checkpoint_every = STEPS
    c.train.sample_tokens = 0
    c.train.progress = False
    return c


def sweep(add, arg=None):
    for name, overrides in POINTS.items():
        add(**{"optim.name": name, **overrides})


def run(root):
    """Trains every point with lmjax.train.loop.train in this process; ROOT/results.csv."""
    from lmjax import config as config_lib
    from lmjax.train.loop import train
    rows = []
    points = []
    sweep(lambda **o: points.append(o))
    for point in points:
        cfg = config_lib.apply_overrides(get_config(), point)
        summary = train(cfg, os.path.join(root, point["optim.name"]))
        rows.append({**point, **{k: summary[k] for k in ("eval_loss", "train_loss",
                                                          "wall_time_s")}})
        with open(os.path.join(root, "results.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)


def table(root):
    with open(os.path.join(root, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    lines = ["| optimizer | eval loss | train loss | wall s |", "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['optim.name']} | {float(row['eval_loss']):.4f} | "
                     f"{float(row['train_loss']):.4f} | {float(row['wall_time_s']):.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("run", "report"):
        sys.exit("usage: python experiments/optimizers.py run|report ROOT")
    if sys.argv[1] == "run":
        run(sys.argv[2])
    print(table(sys.argv[2]))
