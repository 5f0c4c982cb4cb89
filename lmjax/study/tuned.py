"""A scaling study with its learning rate tuned per FLOP budget, from runs of it at several rates.

    python -m lmjax.study.tuned --results=RATE=DIR/results.csv --results=RATE=... --out=DIR

Each --results is the results.csv of one rate's run of a study (lmjax.study.wsd writes it, and
a curves.csv beside it). For every budget, the rates that ran all of that budget's sizes are
candidates, and the one whose IsoFLOP parabola reaches the lowest loss (its lowest run where
the parabola has no minimum) is chosen: the rate is tuned to the budget's horizon, as
Chinchilla tuned its schedule to each run's length, and every profile still comes from a
single rate. OUT gets results.csv and curves.csv of the chosen runs (with an `lr` column), and
tuning.txt, the table it prints; `lmjax-scaling --results=OUT/results.csv` then refits them.
"""
import os
import sys

import numpy as np

from lmjax.errors import UsageError
from lmjax.study import analysis, isoflop
from lmjax.study.rates import parse_specs, results_parser
from lmjax.study.wsd import read_csv, write_csv

BUDGET_TOLERANCE = 1e-3  # budgets are written with 6 significant digits


def _matching(value: float, known) -> float | None:
    """The budget of `known` that `value` is, to the CSV's rounding."""
    return next((b for b in known if abs(value - b) <= BUDGET_TOLERANCE * b), None)


def profile_loss(params, losses) -> float:
    """The lowest loss of one budget's IsoFLOP profile: its parabola's minimum where it has
    one inside the sizes, else its lowest run."""
    fit = isoflop.fit_profile(0.0, params, losses)
    return float(fit["loss_opt"]) if not fit["degenerate"] else float(np.min(losses))


def choose(tables: dict) -> list[dict]:
    """{rate: read_results(...)} -> a row per budget, smallest first: {"budget", "sizes",
    "loss": {rate: profile loss}, "best": rate}; a rate that lacks one of the budget's sizes
    (the most any rate ran there) is left out of that budget."""
    known = []
    per_rate = {}
    for rate, t in tables.items():
        points = {}
        for n, loss, budget in zip(t["params"], t["loss"], t["budget"]):
            key = _matching(float(budget), known)
            if key is None:
                key = float(budget)
                known.append(key)
            points.setdefault(key, {})[float(n)] = float(loss)
        per_rate[rate] = points
    rows = []
    for budget in sorted(known):
        sizes = max((set(p.get(budget, {})) for p in per_rate.values()), key=len)
        losses = {}
        for rate in sorted(per_rate):
            runs = per_rate[rate].get(budget, {})
            if sizes <= set(runs):
                ordered = sorted(sizes)
                losses[rate] = profile_loss(ordered, [runs[n] for n in ordered])
        rows.append({"budget": budget, "sizes": len(sizes), "loss": losses,
                     "best": min(losses, key=losses.get)})
    return rows


def format_table(rows: list[dict], rates: list) -> str:
    lines = [f"{'C':>10} {'sizes':>5} " + " ".join(f"{r:>9.3g}" for r in rates) + "   chosen"]
    for row in rows:
        cells = " ".join((f"{row['loss'][r]:>8.4f}" + ("*" if r == row["best"] else " "))
                         if r in row["loss"] else f"{'-':>8} " for r in rates)
        lines.append(f"{row['budget']:>10.3g} {row['sizes']:>5} {cells}   {row['best']:.3g}")
    lines.append("(the lowest loss of each budget's IsoFLOP profile at each rate that ran all "
                 "of its sizes; * = chosen)")
    return "\n".join(lines)


def merge(specs: list, rows: list[dict], out_dir: str) -> int:
    """Writes OUT/results.csv and OUT/curves.csv of each budget's chosen rate; returns the
    number of result rows written."""
    chosen = {row["budget"]: row["best"] for row in rows}
    results, curves, fields, curve_fields = [], [], None, None
    for rate, path in specs:
        kept_runs = set()
        for row in read_csv(path):
            budget = row.get("flops_budget", "")
            try:
                key = _matching(float(budget), chosen)
            except ValueError:
                continue
            if key is None or chosen[key] != rate:
                continue
            fields = fields or list(row) + ["lr"]
            results.append({**row, "lr": f"{rate:g}"})
            kept_runs.add(row.get("name", ""))
        curves_path = os.path.join(os.path.dirname(path), "curves.csv")
        if os.path.isfile(curves_path):
            for row in read_csv(curves_path):
                if row.get("run") in kept_runs:
                    curve_fields = curve_fields or list(row)
                    curves.append(row)
    os.makedirs(out_dir, exist_ok=True)
    write_csv(os.path.join(out_dir, "results.csv"), fields, results)
    if curves:
        write_csv(os.path.join(out_dir, "curves.csv"), curve_fields, curves)
    return len(results)


def main(argv=None) -> int:
    args = results_parser(__doc__.split("\n")[0],
                          "directory for the merged results.csv").parse_args(argv)
    try:
        specs = parse_specs(args.results)
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise UsageError(f"--out={args.out}: exists and is not a directory")
        tables = {rate: analysis.read_results(path) for rate, path in specs}
        rows = choose(tables)
        for _, path in specs:
            if os.path.abspath(os.path.dirname(path)) == os.path.abspath(args.out):
                raise UsageError(f"--out={args.out}: holds the input {path}; write elsewhere")
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = format_table(rows, sorted(rate for rate, _ in specs))
    written = merge(specs, rows, args.out)
    with open(os.path.join(args.out, "tuning.txt"), "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"wrote {written} runs to {args.out}/results.csv (and curves.csv, tuning.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
