"""Refits a scaling study from its results.csv and redraws its figures, running nothing:

    lmjax-scaling --results=DIR/results.csv [--curves=DIR/curves.csv] [--out=DIR]
                  [--samples=200] [--params=num_params] [--loss=eval_loss]

Writes OUT/fits.json (both fits, their 90% bootstrap intervals, the monotonicity checks),
OUT/report.txt (what it prints), OUT/isoflop.png, OUT/parametric.png and, when a curves.csv is
there, OUT/wsd_curves.png.
"""
import json
import os
import sys

import numpy as np

from lmjax.errors import UsageError
from lmjax.study import analysis as analysis_lib, figures, isoflop


def _plain(value):
    """JSON-ready copies of numpy scalars, arrays and tuples."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "samples"}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def refit(results_csv: str, out_dir: str, curves_csv: str = "", samples: int = 200,
          params_column: str = "num_params", loss_column: str = "eval_loss",
          log=print, bootstrap: str = "pairs") -> dict:
    results = analysis_lib.read_results(results_csv, params_column, loss_column)
    log(f"fitting {len(results['loss'])} runs of {results_csv} "
        f"({samples} bootstrap resamples)...")
    curves = None
    if curves_csv and os.path.isfile(curves_csv):
        curves = figures.read_curves(curves_csv)
    analysis = analysis_lib.analyse(results, samples=samples, curves=curves,
                                    bootstrap=bootstrap)
    report = analysis_lib.loss_table(results) + "\n\n" + analysis_lib.format_report(analysis)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "fits.json"), "w") as f:
        json.dump(_plain(analysis), f, indent=1)
        f.write("\n")
    with open(os.path.join(out_dir, "report.txt"), "w") as f:
        f.write(report + "\n")
    figures.isoflop_profiles(results, analysis, os.path.join(out_dir, "isoflop.png"))
    if analysis["parametric"] is not None:
        figures.parametric_fit(results, analysis, os.path.join(out_dir, "parametric.png"))
    if curves:
        figures.wsd_curves(curves, os.path.join(out_dir, "wsd_curves.png"))
    log(report)
    log(f"wrote fits.json, report.txt and figures to {out_dir}")
    return analysis


def run(args) -> int:
    """lmjax-scaling --results=...: args.results, curves, out, samples, params, loss,
    bootstrap."""
    if args.samples < 10:
        print(f"error: --samples={args.samples}: use at least 10 bootstrap resamples",
              file=sys.stderr)
        return 2
    if args.bootstrap not in isoflop.RESAMPLERS:
        print(f"error: --bootstrap={args.bootstrap}: use one of {', '.join(isoflop.RESAMPLERS)}",
              file=sys.stderr)
        return 2
    directory = os.path.dirname(os.path.abspath(args.results))
    curves = args.curves or os.path.join(directory, "curves.csv")
    try:
        refit(args.results, args.out or directory, curves, args.samples, args.params, args.loss,
              bootstrap=args.bootstrap)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
