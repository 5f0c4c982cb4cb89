"""Learning rates compared at a study's own horizons: the decayed eval loss of the same (N, D)
points trained at several rates, as a table and a figure.

    python -m lmjax.study.rates --results=RATE=DIR/results.csv --results=RATE=... --out=PNG

Each --results is the results.csv of one rate's run of a study (lmjax.study.wsd writes it).
Points are matched by parameter count and tokens, and only the points every rate has are
compared, so a study stopped part-way can stand beside a finished one. The table gives each
point's loss at every rate and marks the best; the figure draws loss against the rate, a line
per point.
"""
import sys

import numpy as np

from lmjax.cli import ArgumentParser, check_output_file
from lmjax.errors import UsageError
from lmjax.study import analysis


def parse_spec(spec: str) -> tuple[float, str]:
    """RATE=PATH of one --results."""
    rate, sep, path = spec.partition("=")
    try:
        value = float(rate)
    except ValueError:
        value = float("nan")
    if not sep or not path or not value > 0:
        raise UsageError(f"--results={spec}: give RATE=PATH, e.g. --results=6e-3=DIR/results.csv")
    return value, path


def results_parser(description: str, out_help: str) -> ArgumentParser:
    """--results RATE=PATH (repeated) and --out, as every command over several rates takes."""
    parser = ArgumentParser(description=description)
    parser.add_argument("--results", action="append", default=[],
                        help="RATE=PATH of a study's results.csv (at least two)")
    parser.add_argument("--out", required=True, help=out_help)
    return parser


def parse_specs(specs: list) -> list[tuple[float, str]]:
    """Every --results, at least two of them at different rates."""
    parsed = [parse_spec(s) for s in specs]
    if len({rate for rate, _ in parsed}) < 2:
        raise UsageError("--results: give at least two different rates, each as RATE=PATH")
    return parsed


def compare(tables: dict) -> list[dict]:
    """{rate: read_results(...)} -> a row per (N, D) point all rates share, smallest N then D
    first: {"params", "tokens", "loss": {rate: loss}, "best": rate}."""
    by_rate = {rate: {(float(n), float(d)): float(loss) for n, d, loss in
                      zip(t["params"], t["tokens"], t["loss"])} for rate, t in tables.items()}
    shared = set.intersection(*(set(points) for points in by_rate.values()))
    if not shared:
        raise UsageError("--results: the files share no (num_params, tokens) point; pass runs "
                         "of the same study at different rates")
    rows = []
    for n, d in sorted(shared):
        losses = {rate: points[(n, d)] for rate, points in sorted(by_rate.items())}
        rows.append({"params": n, "tokens": d, "loss": losses,
                     "best": min(losses, key=losses.get)})
    return rows


def format_table(rows: list[dict]) -> str:
    rates = list(rows[0]["loss"])
    lines = [f"{'N':>10} {'D':>10} " + " ".join(f"{r:>9.3g}" for r in rates) + "   best"]
    for row in rows:
        cells = " ".join(f"{row['loss'][r]:>8.4f}" + ("*" if r == row["best"] else " ")
                         for r in rates)
        lines.append(f"{row['params']:>10.3g} {row['tokens']:>10.3g} {cells}   {row['best']:.3g}")
    wins = {r: sum(row["best"] == r for row in rows) for r in rates}
    lines.append("best at " + ", ".join(f"{r:.3g}: {w} of {len(rows)}" for r, w in wins.items()))
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    from lmjax.study import figures
    matplotlib, plt = figures._pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = matplotlib.colormaps["viridis"]
    log_d = np.log([row["tokens"] for row in rows])
    span = max(log_d.max() - log_d.min(), 1e-9)
    markers = {n: "osD^v<>p*h"[i % 10] for i, n in
               enumerate(sorted({row["params"] for row in rows}))}
    for row, x in zip(rows, log_d):
        rates = list(row["loss"])
        ax.plot(rates, [row["loss"][r] for r in rates], marker=markers[row["params"]],
                color=cmap((x - log_d.min()) / span),
                label=f"N = {row['params']:.3g}, D = {row['tokens']:.3g}")
        ax.plot([row["best"]], [row["loss"][row["best"]]], marker="*", markersize=14,
                color=cmap((x - log_d.min()) / span), markeredgecolor="k", zorder=3)
    ax.set(xscale="log", xlabel="learning rate", ylabel="decayed eval loss (nats/token)",
           title="the rate at each point's own horizon (★ = best)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    figures._save(fig, path)


def main(argv=None) -> int:
    args = results_parser(__doc__.split("\n")[0], "the figure (PNG)").parse_args(argv)
    try:
        specs = parse_specs(args.results)
        check_output_file(args.out, "--out")
        rows = compare({rate: analysis.read_results(path) for rate, path in specs})
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows))
    plot(rows, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
