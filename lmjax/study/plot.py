"""Plots people compare: loss curves of several runs, and a sweep's eval loss against its fields.

    lmjax-plot WORKDIR [WORKDIR ...] [--out=loss_curves.png] [--x=step|tokens]
    lmjax-plot --goodput WORKDIR [WORKDIR ...] --out=goodput.png

Each WORKDIR holds the metrics.jsonl that lmjax-train writes; train loss is drawn solid and eval
loss dashed with markers, one colour per run.
"""
import json
import math
import os
import sys
from io import BytesIO

from etils import epath

from lmjax import io
from lmjax.cli import ArgumentParser, check_output_file
from lmjax.errors import UsageError

MAX_SWEEP_COLUMNS = 4  # panels per row of a sweep's results.png
MAX_SWEEP_LEGEND = 8  # lines per panel that still get a legend
MANY_RUNS = 12  # more runs than this in one loss plot get one short legend entry each
RUN_LABEL_WIDTH = 48


def read_metrics(workdir: str) -> list[dict]:
    """Records of WORKDIR/metrics.jsonl, one per step (the latest wins after a resume).

    A run still writing may have a half-written last line; it is skipped.
    """
    from etils import epath
    path = epath.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    by_step = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            by_step.setdefault(record["step"], {}).update(record)
    return [by_step[step] for step in sorted(by_step)]


def _series(records, x_key, y_key):
    xs, ys = [], []
    for record in records:
        if y_key in record and x_key in record and record[y_key] is not None:
            xs.append(record[x_key])
            ys.append(record[y_key])
    return xs, ys


def _save(fig, path: str) -> None:
    import matplotlib.pyplot as plt
    out = epath.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    io.write_bytes(out, buffer.getvalue())  # a reader never sees half a PNG


def _labels(workdirs):
    """Shortest distinguishing names: basenames, or parent/basename where basenames collide."""
    names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
    if len(set(names)) < len(names):
        names = [os.path.join(*os.path.normpath(w).split(os.sep)[-2:]) for w in workdirs]
    return names


def plot_runs(workdirs, out: str, x_key: str = "step", title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = matplotlib.colormaps["tab10" if len(workdirs) <= 10 else "viridis"]
    drawn = 0
    # Many runs: one legend entry per run, its name cut short (solid train, dashed eval).
    many = len(workdirs) > MANY_RUNS
    for i, (workdir, label) in enumerate(zip(workdirs, _labels(workdirs))):
        records = read_metrics(workdir)
        color = colors(i % 10) if len(workdirs) <= 10 else colors(i / max(1, len(workdirs) - 1))
        if many:
            label = _short(label, RUN_LABEL_WIDTH)
        xs, ys = _series(records, x_key, "train_loss")
        if xs:
            ax.plot(xs, ys, color=color, linewidth=1.2, alpha=0.8,
                    label=label if many else f"{label} train")
            drawn += 1
        xs, ys = _series(records, x_key, "eval_loss")
        if xs:
            ax.plot(xs, ys, color=color, linestyle="--", marker="o", markersize=3,
                    label="_" if many else f"{label} eval")
            drawn += 1
    if not drawn:
        plt.close(fig)
        raise UsageError(f"no train_loss/eval_loss against {x_key!r} in metrics.jsonl of "
                         f"{', '.join(workdirs)}; pass workdirs of lmjax-train runs")
    ax.set(xlabel=x_key, ylabel="loss", title=(title or "loss curves")
           + (" (solid: train, dashed: eval)" if many else ""))
    ax.grid(alpha=0.3)
    entries = len(workdirs) if many else drawn
    if entries > 8:
        # The legend goes beside the axes so it never hides the curves; savefig's tight bounding
        # box makes room for it.
        fig.set_size_inches(12, 5)
        ax.legend(fontsize=6, ncol=1 if entries <= 24 else 2, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=7)
    _save(fig, out)


def plot_goodput(workdirs, out: str, title: str = "") -> None:
    """One horizontal bar per run: its wall time split into the goodput buckets (all restarts)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from etils import epath
    from lmjax.train.goodput import BUCKETS, LEDGER
    rows = []
    for workdir, label in zip(workdirs, _labels(workdirs)):
        path = epath.Path(workdir) / LEDGER
        if path.exists():
            ledger = json.loads(path.read_text())
            rows.append((f"{label} ({ledger['goodput']:.0%} goodput)", ledger["buckets_s"]))
    if not rows:
        raise UsageError(f"no {LEDGER} in {', '.join(workdirs)}; pass workdirs of lmjax-train "
                         "runs")
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.5 * len(rows)))
    colors = matplotlib.colormaps["tab10"]
    for i, bucket in enumerate(BUCKETS):
        widths = [float(buckets.get(bucket, 0.0)) for _, buckets in rows]
        lefts = [sum(float(b.get(k, 0.0)) for k in BUCKETS[:i]) for _, b in rows]
        ax.barh([label for label, _ in rows], widths, left=lefts, color=colors(i), label=bucket)
    ax.set_xlabel("wall time (s), summed over restarts")
    ax.set_title(title or "where the time went", pad=24)  # room for the legend above the bars
    ax.invert_yaxis()
    ax.legend(fontsize=7, ncol=len(BUCKETS), loc="lower center", bbox_to_anchor=(0.5, 1.08))
    fig.tight_layout()
    _save(fig, out)


def plot_tasks(workdir: str, out: str) -> bool:
    """loss.png's companion: every task/<name>/<metric> of metrics.jsonl against step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    records = read_metrics(workdir)
    keys = sorted({k for r in records for k in r if k.startswith("task/")})
    if not keys:
        return False
    # One panel per metric: accuracies and perplexities do not share a scale.
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 2.2 * len(keys) + 0.6), sharex=True,
                             squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        xs, ys = _series(records, "step", key)
        ax.plot(xs, ys, marker="o", markersize=3)
        ax.set_ylabel(key[len("task/"):].replace("/", "\n"), fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    axes[0, 0].set_title(f"{os.path.basename(os.path.normpath(workdir))}: lm-eval tasks")
    _save(fig, out)
    return True


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_sweep(rows: list[dict], fields: list[str], out: str, metric: str = "eval_loss") -> bool:
    """One panel per swept field: `metric` against the field, a line per setting of the others.

    Fields that every finished point shares are left out. Returns False (and draws nothing)
    while no point has the metric yet.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if isinstance(r.get(metric), (int, float))
            and math.isfinite(r[metric])]
    if not done or not fields:
        return False
    varying = [f for f in fields if len({repr(r.get(f)) for r in done}) > 1]
    fields = varying or fields[:1]
    columns = min(len(fields), MAX_SWEEP_COLUMNS)
    rows_of_panels = -(-len(fields) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(5 * columns, 4.2 * rows_of_panels),
                             squeeze=False)
    for ax in axes.flat[len(fields):]:
        ax.set_visible(False)
    for ax, field in zip(axes.flat, fields):
        others = [f for f in fields if f != field]
        groups = {}
        for row in done:
            key = tuple((f, row.get(f)) for f in others)
            groups.setdefault(key, []).append(row)
        values = [row.get(field) for row in done]
        numeric = all(_is_number(v) for v in values)
        categories = sorted({repr(v) for v in values})
        for key, members in sorted(groups.items(), key=lambda kv: repr(kv[0])):
            if numeric:
                members = sorted(members, key=lambda r: r[field])
                xs = [r[field] for r in members]
            else:
                xs = [categories.index(repr(r.get(field))) for r in members]
            label = ", ".join(f"{f.split('.')[-1]}={v}" for f, v in key) or None
            ax.plot(xs, [r[metric] for r in members], marker="o", label=label)
        if numeric:
            positive = [v for v in values if v > 0]
            if len(positive) == len(values) and max(values) / min(values) >= 10:
                ax.set_xscale("log")
        else:
            ax.set_xticks(range(len(categories)), [_short(c) for c in categories], rotation=30,
                          ha="right", fontsize=7)
        ax.set(xlabel=field, ylabel=metric)
        ax.grid(alpha=0.3)
        # Where each line is one point, its legend names what the other panels already show.
        if 1 < len(groups) <= MAX_SWEEP_LEGEND and len(groups) < len(done):
            ax.legend(fontsize=7)
    fig.suptitle(f"{metric} of {len(done)}/{len(rows)} sweep points")
    fig.tight_layout()
    _save(fig, out)
    return True


def _short(label: str, width: int = 24) -> str:
    return label if len(label) <= width else label[:width - 3] + "..."


def main(argv=None) -> int:
    parser = ArgumentParser(prog="lmjax-plot", description=__doc__.split("\n")[0])
    parser.add_argument("workdirs", nargs="+", help="workdirs of lmjax-train runs")
    parser.add_argument("--out", default="loss_curves.png", help="PNG to write")
    parser.add_argument("--x", default="step", choices=("step", "tokens"))
    parser.add_argument("--title", default="")
    parser.add_argument("--goodput", action="store_true",
                        help="draw each run's wall-time breakdown (goodput.json) instead")
    args = parser.parse_args(argv)
    try:
        from etils import epath
        missing = [w for w in args.workdirs if not epath.Path(w).is_dir()]
        if missing:
            raise UsageError(f"{missing[0]}: no such workdir; pass directories written by "
                             "lmjax-train")
        check_output_file(args.out, "--out")
        if args.goodput:
            plot_goodput(args.workdirs, args.out, title=args.title)
        else:
            plot_runs(args.workdirs, args.out, x_key=args.x, title=args.title)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
