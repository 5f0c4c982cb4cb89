"""How often each bootstrap's 90% interval for Approach 2's exponent a holds the truth, on a
study's own design.

    python -m lmjax.study.coverage --results=DIR/results.csv [--sigma=0.0124] [--trials=200]
        [--samples=300] [--out=TXT]

The truth is the study's fitted IsoFLOP parabolas: their values at its runs, whose exponent is
the study's own a. Each trial adds independent N(0, sigma^2) noise to those values (--sigma,
e.g. the seed noise lmjax.study.seeds measured; by default the residuals' own estimate),
refits Approach 2 and asks each of isoflop.RESAMPLERS for its interval. A method whose interval
holds the truth in about 90% of trials is calibrated for this design; one that holds it less
often claims more precision than the runs have. The spread of the trials' own a is the
sampling distribution the intervals try to estimate.
"""
import os
import sys

import numpy as np

from lmjax.cli import ArgumentParser, check_output_file
from lmjax.errors import UsageError
from lmjax.study import analysis, isoflop

LEVEL = (5, 95)


def residual_sigma(budgets, params, losses) -> float:
    """The noise's standard deviation from the parabolas' residuals (runs - 3 degrees of
    freedom per budget of at least 3 sizes)."""
    fitted, _ = isoflop.residuals(budgets, params, losses)
    dof = sum(int(np.sum(budgets == c)) - 3 for c in np.unique(budgets)
              if len(np.unique(params[budgets == c])) >= 3)
    if dof == 0:
        raise UsageError("no budget has more runs than its parabola's 3 coefficients, so the "
                         "residuals say nothing of the noise; pass --sigma")
    return float(np.sqrt(np.sum((losses - fitted) ** 2) / dof))


def coverage(budgets, params, tokens, losses, sigma: float, trials: int = 200,
             samples: int = 300, seed: int = 0) -> dict:
    """Per method: the share of trials whose interval holds the truth, the intervals' median
    width, and the trials that gave one; with the truth and the trials' spread of a."""
    budgets, params, tokens, losses = (np.asarray(x, dtype=np.float64)
                                       for x in (budgets, params, tokens, losses))
    fitted, _ = isoflop.residuals(budgets, params, losses)
    truth = isoflop.fit(budgets, params, tokens, fitted)
    if truth["degenerate"] or any(p["degenerate"] for p in truth["profiles"]):
        raise UsageError("the study's Approach 2 is degenerate, so there is no exponent to cover")
    rng = np.random.default_rng(seed)
    held = {m: [] for m in isoflop.RESAMPLERS}
    widths = {m: [] for m in isoflop.RESAMPLERS}
    estimates = []
    for trial in range(trials):
        noisy = fitted + rng.normal(0.0, sigma, size=len(fitted))
        refit = isoflop.fit(budgets, params, tokens, noisy)
        if refit["degenerate"] or any(p["degenerate"] for p in refit["profiles"]):
            continue  # a study that lost a minimum reports no exponent to cover
        estimates.append(refit["a"])
        for method in isoflop.RESAMPLERS:
            boot = isoflop.bootstrap(budgets, params, tokens, noisy, samples=samples,
                                     seed=seed * 100003 + trial, method=method)
            if "a" not in boot["intervals"]:
                continue
            low, high = boot["intervals"]["a"]
            held[method].append(low <= truth["a"] <= high)
            widths[method].append(high - low)
    if not estimates:
        raise UsageError(f"every trial lost a budget's minimum at sigma = {sigma:.4g}")
    methods = {m: {"coverage": float(np.mean(held[m])) if held[m] else float("nan"),
                   "median_width": float(np.median(widths[m])) if widths[m] else float("nan"),
                   "trials": len(held[m])} for m in isoflop.RESAMPLERS}
    spread = np.percentile(estimates, LEVEL)
    return {"truth": truth["a"], "sigma": sigma, "trials": len(estimates),
            "estimates": (float(spread[0]), float(spread[1])), "methods": methods}


def report(result: dict) -> str:
    low, high = result["estimates"]
    lines = [f"truth: a = {result['truth']:.4f} (the study's parabolas), noise sigma = "
             f"{result['sigma']:.4f}, {result['trials']} trials",
             f"the trials' own a: 5th-95th percentile [{low:.4f}, {high:.4f}] "
             f"(width {high - low:.4f})",
             f"{'method':12}{'holds truth':>13}{'median width':>14}{'trials':>8}"]
    for method, m in result["methods"].items():
        lines.append(f"{method:12}{m['coverage']:>13.2f}{m['median_width']:>14.4f}"
                     f"{m['trials']:>8}")
    lines.append("a calibrated 90% interval holds the truth in ~0.90 of trials")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True, help="the study's results.csv")
    parser.add_argument("--sigma", type=float, default=0.0,
                        help="noise per run (default: the parabolas' residual estimate)")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--samples", type=int, default=300, help="bootstrap resamples a trial")
    parser.add_argument("--out", default="", help="also write the report to this file")
    args = parser.parse_args(argv)
    try:
        if args.trials < 10 or args.samples < 10:
            raise UsageError(f"--trials={args.trials} --samples={args.samples}: use at "
                             "least 10 of each")
        if args.sigma < 0:
            raise UsageError(f"--sigma={args.sigma}: must be > 0 (or 0 for the residuals')")
        if args.out:
            check_output_file(args.out, "--out")
        study = analysis.read_results(args.results)
        sigma = args.sigma or residual_sigma(study["budget"], study["params"], study["loss"])
        result = coverage(study["budget"], study["params"], study["tokens"], study["loss"],
                          sigma, args.trials, args.samples)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = report(result)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
