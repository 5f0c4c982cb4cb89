"""A scaling study's results.csv, fitted both ways, with intervals, checks and the papers beside.

The CSV has a row per run: `num_params` (or the column --params names), `tokens`, `eval_loss`
(or --loss), and optionally `status` (only "done" rows count), `role` (only "cooldown" rows are
fitted when present: stable-phase runs have not decayed their learning rate) and
`flops_budget` (the budget a run was designed for; otherwise runs are grouped by 6ND).
"""
import csv
import math

import numpy as np

from lmjax.errors import UsageError
from lmjax.study import isoflop, parametric, published


def read_results(path: str, params_column: str = "num_params",
                 loss_column: str = "eval_loss") -> dict:
    """Arrays name, params, tokens, loss, budget of the finished, decayed runs of a CSV."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise UsageError(f"--results={path}: cannot read it ({e.strerror}); pass the "
                         "results.csv of a scaling study") from None
    header = set(rows[0]) if rows else set()
    missing = [c for c in (params_column, "tokens", loss_column) if c not in header]
    if missing:
        raise UsageError(f"--results={path}: no column {missing[0]!r}; a scaling study's CSV "
                         f"has {params_column}, tokens and {loss_column}")
    kept = []
    for row in rows:
        if row.get("status", "done") != "done" or row.get("role", "cooldown") != "cooldown":
            continue
        try:
            n, d, loss = (float(row[c]) for c in (params_column, "tokens", loss_column))
        except ValueError:
            continue
        if math.isfinite(loss):
            budget = float(row["flops_budget"]) if row.get("flops_budget") else math.nan
            kept.append((row.get("name", ""), n, d, loss, budget))
    if not kept:
        raise UsageError(f"--results={path}: no finished runs with {params_column}, tokens and "
                         f"{loss_column}")
    names, params, tokens, losses, budgets = (np.array(x) for x in zip(*kept))
    params, tokens, losses = (x.astype(np.float64) for x in (params, tokens, losses))
    budgets = budgets.astype(np.float64)
    if np.isnan(budgets).any():
        budgets = isoflop.group_budgets(params, tokens)
    return {"name": names, "params": params, "tokens": tokens, "loss": losses,
            "budget": budgets}


def monotonicity(results: dict) -> dict:
    """Does loss fall with D at each N, and with N at each D (runs sharing a token count)?

    Returns the violations (pairs of runs where more of N or D gave a higher loss) and the
    number of pairs checked.
    """
    params, tokens, losses = results["params"], results["tokens"], results["loss"]
    out = {}
    for fixed, varied, label in ((params, tokens, "D at fixed N"), (tokens, params,
                                                                    "N at fixed D")):
        checked, violations = 0, []
        for value in np.unique(fixed):
            members = np.flatnonzero(fixed == value)
            members = members[np.argsort(varied[members])]
            for i, j in zip(members[:-1], members[1:]):
                if varied[j] == varied[i]:
                    continue
                checked += 1
                if losses[j] >= losses[i]:
                    violations.append((results["name"][i], results["name"][j],
                                       float(losses[i]), float(losses[j])))
        out[label] = {"checked": checked, "violations": violations}
    return out


def stable_monotonicity(curves: list[dict]) -> dict:
    """Does loss fall with N at fixed D along the stable phases (constant LR)?

    Each size's stable-phase evals (curves.csv rows) against tokens, compared as
    `_adjacent_sizes_at_equal_tokens` does.
    """
    by_size = {}
    for row in curves:  # a segment's first eval repeats its source's last: one per D
        if row.get("role") == "stable" and row.get("eval_loss") not in ("", None):
            by_size.setdefault(float(row["num_params"]), {})[float(row["tokens"])] = \
                float(row["eval_loss"])
    return _adjacent_sizes_at_equal_tokens(by_size)


def decayed_monotonicity(results: dict) -> dict:
    """Does the decayed loss (what both fits use) fall with N at fixed D?

    Branches of different sizes never share a token count, so each size's decayed losses are
    interpolated in log D between its own branches (`_adjacent_sizes_at_equal_tokens`).
    """
    by_size = {}
    for n, d, loss in zip(results["params"], results["tokens"], results["loss"]):
        by_size.setdefault(float(n), {})[float(d)] = float(loss)
    return _adjacent_sizes_at_equal_tokens(by_size)


def _adjacent_sizes_at_equal_tokens(by_size: dict) -> dict:
    """{N: {D: loss}}: at every D of the larger of two adjacent sizes that lies within the
    smaller one's range, the smaller one's loss, interpolated in log D, must be higher.
    Nothing is extrapolated: a D outside the smaller size's range is not checked."""
    checked, violations = 0, []
    sizes = sorted(by_size)
    for small, large in zip(sizes[:-1], sizes[1:]):
        d_small, l_small = (np.array(x) for x in zip(*sorted(by_size[small].items())))
        for d, loss in sorted(by_size[large].items()):
            if not d_small[0] <= d <= d_small[-1]:
                continue
            checked += 1
            reference = float(np.interp(np.log(d), np.log(d_small), l_small))
            if loss >= reference:
                violations.append((f"N={small:.3g} at D={d:.3g}", f"N={large:.3g}",
                                   reference, loss))
    return {"checked": checked, "violations": violations}


def analyse(results: dict, samples: int = 200, seed: int = 0, starts: int = 64,
            bootstrap_starts: int = 2, curves: list[dict] | None = None,
            bootstrap: str = "pairs") -> dict:
    """Both fits with their bootstrap intervals, and the monotonicity checks (the stable
    phases' too, given the study's curves.csv rows)."""
    checks = monotonicity(results)
    checks["N at fixed D, decayed (interpolated in log D)"] = decayed_monotonicity(results)
    if curves:
        checks["N at fixed D, stable phase"] = stable_monotonicity(curves)
    budgets = results["budget"]
    iso = isoflop.fit(budgets, results["params"], results["tokens"], results["loss"])
    iso_boot = isoflop.bootstrap(budgets, results["params"], results["tokens"],
                                 results["loss"], samples=samples * 5, seed=seed,
                                 method=bootstrap)
    flops = sorted(set(float(c) for c in budgets))
    try:
        param = parametric.fit(results["params"], results["tokens"], results["loss"],
                               starts=starts)
    except UsageError as e:  # too few runs so far: Approach 2 and the checks still report
        return {"isoflop": iso, "isoflop_bootstrap": iso_boot, "parametric": None,
                "parametric_error": str(e), "monotonicity": checks,
                "budgets": flops, "num_runs": len(results["loss"])}
    param_boot = parametric.bootstrap(results["params"], results["tokens"], results["loss"],
                                      samples=samples, seed=seed, starts=bootstrap_starts,
                                      budgets=flops, center=param)
    param_derived = parametric.derived(param, flops)
    return {"isoflop": iso, "isoflop_bootstrap": iso_boot, "parametric": param,
            "parametric_derived": param_derived, "parametric_bootstrap": param_boot,
            "monotonicity": checks, "budgets": flops,
            "num_runs": len(results["loss"])}


def _interval(boot: dict, key: str) -> str:
    if key not in boot["intervals"]:
        return "[no resample]"
    low, high = boot["intervals"][key]
    return f"[{low:.3g}, {high:.3g}]"


def format_report(analysis: dict) -> str:
    iso, boot = analysis["isoflop"], analysis["isoflop_bootstrap"]
    lines = [f"{analysis['num_runs']} decayed runs over {len(analysis['budgets'])} FLOP budgets",
             "", "Approach 2 (IsoFLOP parabolas):"]
    for p in iso["profiles"]:
        c = p["budget"]
        if "n_opt" in p:
            text = (f"N_opt {p['n_opt']:.3g} {_interval(boot, f'n_opt@{c:.3g}')}, D_opt "
                    f"{p['d_opt']:.3g}, tokens/param {p['tokens_per_param']:.3g} "
                    f"{_interval(boot, f'tokens_per_param@{c:.3g}')}, loss {p['loss_opt']:.4f}")
        else:
            text = ""
        flag = f"  DEGENERATE: {p['degenerate']}" if p["degenerate"] else ""
        lines.append(f"  C = {c:.3g} ({p['num_sizes']} sizes): {text}{flag}")
    if iso["degenerate"]:
        lines.append(f"  exponents: DEGENERATE: {iso['degenerate']}")
    else:
        lines.append(f"  {'':10}{'fit':>8}{'90% CI':>18}{'Hoffmann A2':>13}{'equal':>7}")
        for key in ("a", "b"):
            lines.append(f"  {key:10}{iso[key]:>8.3f}{_interval(boot, key):>18}"
                         f"{published.HOFFMANN_ISOFLOP[key]:>13.2f}"
                         f"{published.EQUAL_SCALING[key]:>7.2f}")
        if boot["unavailable"]:
            lines.append(f"  (no interval: {boot['unavailable']})")
        else:
            lines.append(f"  ({boot['num_samples']} bootstrap resamples ({boot['method']}), "
                         f"{boot['dropped']} dropped for a budget without a usable minimum)")

    lines += ["", "Approach 3 (L = E + A/N^alpha + B/D^beta, Huber on log L):"]
    if analysis["parametric"] is None:
        lines.append(f"  not fitted: {analysis['parametric_error']}")
    else:
        lines += _parametric_lines(analysis)
    lines += ["", "Monotonicity (loss must fall as N or D grows with the other fixed):"]
    for label, check in analysis["monotonicity"].items():
        lines.append(f"  {label}: {len(check['violations'])} violations in {check['checked']} "
                     "adjacent pairs")
        for a, b, la, lb in check["violations"]:
            lines.append(f"    {a} ({la:.4f}) -> {b} ({lb:.4f})")
    return "\n".join(lines)


def _parametric_lines(analysis: dict) -> list[str]:
    fit, pboot = analysis["parametric"], analysis["parametric_bootstrap"]
    lines = []
    if fit["degenerate"]:
        # The optimum found, for inspection only: no intervals, no compute-optimal numbers.
        lines.append("  DEGENERATE, not a result: " + "; ".join(fit["degenerate"]))
        lines.append("  where the fit ran to: " + ", ".join(
            f"{k} {fit[k]:.4g}" for k in ("E", "A", "B", "alpha", "beta")))
        return lines
    lines.append(f"  {'':10}{'fit':>10}{'90% CI':>22}{'Hoffmann':>10}{'Besiroglu':>11}")
    hoff, besi = published.HOFFMANN_PARAMETRIC, published.BESIROGLU_PARAMETRIC
    for key in ("E", "A", "B", "alpha", "beta"):
        lines.append(f"  {key:10}{fit[key]:>10.4g}{_interval(pboot, key):>22}"
                     f"{hoff[key]:>10.4g}{besi[key]:>11.4g}")
    derived = analysis["parametric_derived"]
    for key in ("a", "b"):
        lines.append(f"  {key:10}{derived[key]:>10.3f}{_interval(pboot, key):>22}"
                     f"{published.exponents(hoff)[key]:>10.3f}"
                     f"{published.exponents(besi)[key]:>11.3f}")
    for c in analysis["budgets"]:
        key = f"tokens_per_param@{c:.3g}"
        lines.append(f"  compute-optimal tokens/param at C = {c:.3g}: {derived[key]:.3g} "
                     f"{_interval(pboot, key)}")
    lines.append(f"  Huber objective {fit['objective']:.3g} over {fit['num_runs']} runs; "
                 f"{pboot['num_samples']} bootstrap refits, "
                 f"{100 * pboot['degenerate_fraction']:.0f}% of them degenerate")
    return lines


def loss_table(results: dict) -> str:
    """Eval loss by size (rows) and budget (columns), the tokens beside each; a cell with several
    runs (seeds) gives their mean and count."""
    budgets = sorted(set(results["budget"]))
    lines = ["N \\ C".ljust(10) + "".join(f"{c:>24.3g}" for c in budgets)]
    for n in sorted(set(results["params"])):
        cells = []
        for c in budgets:
            hit = np.flatnonzero((results["params"] == n) & (results["budget"] == c))
            runs = f" x{len(hit)}" if len(hit) > 1 else ""
            cells.append(f"{results['loss'][hit].mean():.4f} @ D={results['tokens'][hit[0]]:.2g}"
                         f"{runs}" if len(hit) else "")
        lines.append(f"{n:<10.3g}" + "".join(f"{cell:>24}" for cell in cells))
    return "\n".join(lines)
