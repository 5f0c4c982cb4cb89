"""Chinchilla's Approach 2: IsoFLOP profiles.

For each FLOP budget C, runs of several sizes N trained on D = C / 6N tokens give a loss curve
L(log N); a parabola fitted to it has its minimum at the budget's loss-optimal size N_opt(C),
and D_opt(C) = C / 6 N_opt. Lines fitted to log N_opt and log D_opt against log C give the
exponents of N_opt ∝ C^a and D_opt ∝ C^b (Hoffmann et al. 2022, section 3.2). Bootstrap
intervals resample the runs within each budget and refit everything.

A budget whose parabola opens downwards has no minimum, and one whose minimum lies outside the
sizes it sampled is an extrapolation; both are reported as degenerate and left out of the
exponent fit.

Bootstrap intervals come from one of RESAMPLERS, by name:
- "pairs" (the default): the runs themselves, drawn with replacement within each budget. With
  the 4-5 sizes a budget usually has, most resamples hold fewer than 3 distinct sizes or move
  the minimum outside them and are dropped, and a budget of 4 sizes keeps little but the study
  itself, so its own N_opt interval can shrink to nearly a point (+-0.5% at the smallest budget
  of chinchilla_tiny's `:warmup100`).
- "residuals": each budget's losses are its parabola's fitted values plus residuals drawn from
  every budget's pooled (leverage-adjusted, centred) residuals. The sizes are the study's
  design, fixed, as in a regression bootstrap of residuals (Efron & Tibshirani 1993, ch. 9), so
  every resample keeps every size and every budget has an N_opt interval.
lmjax.study.coverage measures how often each one's interval for a holds the truth on a
study's own design.
"""
import math

import numpy as np

from lmjax.errors import UsageError

MIN_SIZES = 3  # a parabola needs three distinct sizes


def group_budgets(params, tokens, tolerance: float = 1.25) -> np.ndarray:
    """A budget per run: runs whose 6ND lie within `tolerance`x of their neighbours' share
    one, the median of the group (runs are designed for a budget, then rounded to whole
    steps)."""
    flops = 6.0 * np.asarray(params, dtype=np.float64) * np.asarray(tokens, dtype=np.float64)
    order = np.argsort(flops)
    budgets = np.empty_like(flops)
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or flops[order[i]] > flops[order[i - 1]] * tolerance:
            members = order[start:i]
            budgets[members] = float(np.median(flops[members]))
            start = i
    return budgets


def fit_profile(budget: float, params, losses) -> dict:
    """The parabola L = c2 x^2 + c1 x + c0 in x = log N of one budget, and its minimum."""
    log_n = np.log(np.asarray(params, dtype=np.float64))
    losses = np.asarray(losses, dtype=np.float64)
    out = {"budget": float(budget), "num_runs": len(log_n),
           "num_sizes": len(np.unique(log_n)), "degenerate": ""}
    if out["num_sizes"] < MIN_SIZES:
        out["degenerate"] = f"{out['num_sizes']} sizes, a parabola needs {MIN_SIZES}"
        return out
    c2, c1, c0 = np.polyfit(log_n, losses, 2)
    out["coefficients"] = [float(c2), float(c1), float(c0)]
    if c2 <= 0:
        out["degenerate"] = "the parabola opens downwards: no loss minimum over N"
        return out
    x_opt = float(-c1 / (2 * c2))
    out["loss_opt"] = float(c0 - c1 ** 2 / (4 * c2))
    # A nearly flat parabola can put its minimum past any float: such an N (or the D and
    # tokens per parameter it implies) is not computed. Budget 0: only the loss is wanted.
    log_d = math.log(budget / 6.0) - x_opt if budget > 0 else 0.0
    if max(abs(x_opt), abs(log_d), abs(log_d - x_opt)) < 700:
        out["n_opt"] = math.exp(x_opt)
        out["d_opt"] = math.exp(log_d) if budget > 0 else 0.0
        out["tokens_per_param"] = out["d_opt"] / out["n_opt"]
    if not log_n.min() <= x_opt <= log_n.max():
        out["degenerate"] = (f"the minimum N = {math.exp(min(x_opt, 700)):.3g} lies outside the "
                             f"sampled sizes {math.exp(log_n.min()):.3g}-"
                             f"{math.exp(log_n.max()):.3g}")
    return out


def power_law(budgets, values) -> tuple[float, float]:
    """(exponent, log coefficient) of values = k C^exponent, least squares in log-log."""
    slope, intercept = np.polyfit(np.log(budgets), np.log(values), 1)
    return float(slope), float(intercept)


def fit(budgets, params, tokens, losses) -> dict:
    """Profiles of every budget and the exponents a (of N_opt) and b (of D_opt)."""
    budgets, params, tokens, losses = (np.asarray(x, dtype=np.float64)
                                       for x in (budgets, params, tokens, losses))
    profiles = [fit_profile(c, params[budgets == c], losses[budgets == c])
                for c in np.unique(budgets)]
    usable = [p for p in profiles if not p["degenerate"]]
    out = {"profiles": profiles, "degenerate": ""}
    if len(usable) < 2:
        out["degenerate"] = (f"{len(usable)} of {len(profiles)} budgets have a usable IsoFLOP "
                             "minimum; the exponents need at least 2")
        return out
    c = np.array([p["budget"] for p in usable])
    out["a"], out["log_k_n"] = power_law(c, [p["n_opt"] for p in usable])
    out["b"], out["log_k_d"] = power_law(c, [p["d_opt"] for p in usable])
    return out


def pairs_resampler(budgets, params, losses):
    """Runs drawn with replacement within each budget: rng -> (run indices, their losses)."""
    groups = [np.flatnonzero(budgets == c) for c in np.unique(budgets)]

    def draw(rng):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        return idx, losses[idx]
    return draw


def residuals(budgets, params, losses) -> tuple[np.ndarray, np.ndarray]:
    """(fitted values, leverage-adjusted residuals) of every run under its budget's parabola.

    A residual r_i of a least-squares fit has variance sigma^2 (1 - h_i), h_i the run's
    leverage, so r_i / sqrt(1 - h_i) has the noise's variance. Runs of a budget with fewer than
    3 sizes, or exactly fitted (as many sizes as coefficients), have no residual: NaN.
    """
    fitted, adjusted = losses.copy(), np.full_like(losses, np.nan)
    for c in np.unique(budgets):
        members = np.flatnonzero(budgets == c)
        log_n = np.log(params[members])
        if len(np.unique(log_n)) < MIN_SIZES:
            continue
        design = np.vander(log_n, 3)
        hat = design @ np.linalg.pinv(design)
        fitted[members] = hat @ losses[members]
        leverage = np.clip(np.diag(hat), 0.0, 1.0)
        free = leverage < 1.0 - 1e-9
        adjusted[members[free]] = ((losses[members] - fitted[members])[free]
                                   / np.sqrt(1.0 - leverage[free]))
    return fitted, adjusted


def residual_resampler(budgets, params, losses):
    """Each budget's fitted values plus residuals drawn from the pooled, centred residuals:
    rng -> (run indices, losses)."""
    fitted, adjusted = residuals(budgets, params, losses)
    pool = adjusted[np.isfinite(adjusted)]
    if len(pool) == 0:
        raise UsageError("IsoFLOP bootstrap of residuals: every budget's parabola passes "
                         "exactly through its runs (3 sizes or fewer each), so there is no "
                         "residual to resample; run a 4th size in a budget")
    pool = pool - pool.mean()
    idx = np.arange(len(losses))

    def draw(rng):
        return idx, fitted + rng.choice(pool, size=len(losses), replace=True)
    return draw


RESAMPLERS = {"pairs": pairs_resampler, "residuals": residual_resampler}


def bootstrap(budgets, params, tokens, losses, samples: int = 1000, seed: int = 0,
              method: str = "pairs") -> dict:
    """5th-95th percentiles of a, b and of each budget's N_opt, D_opt and tokens per parameter.

    `method` names a RESAMPLERS entry; a resample in which a budget has no usable minimum is
    counted in `dropped` and not used. With no residual to resample, the result has no
    intervals and says why in `unavailable`.
    """
    budgets, params, tokens, losses = (np.asarray(x, dtype=np.float64)
                                       for x in (budgets, params, tokens, losses))
    if len(budgets) == 0:
        raise UsageError("IsoFLOP fit: no runs")
    if method not in RESAMPLERS:
        raise UsageError(f"bootstrap method {method!r}: use one of {', '.join(RESAMPLERS)}")
    try:
        draw = RESAMPLERS[method](budgets, params, losses)
    except UsageError as e:
        return {"intervals": {}, "samples": [], "num_samples": 0, "dropped": 0,
                "method": method, "unavailable": str(e)}
    rng = np.random.default_rng(seed)
    rows, dropped = [], 0
    names = np.unique(budgets)
    for _ in range(samples):
        idx, resampled = draw(rng)
        refit = fit(budgets[idx], params[idx], tokens[idx], resampled)
        if refit["degenerate"] or any(p["degenerate"] for p in refit["profiles"]):
            dropped += 1
            continue
        row = {"a": refit["a"], "b": refit["b"], "log_k_n": refit["log_k_n"],
               "log_k_d": refit["log_k_d"]}
        for c, p in zip(names, refit["profiles"]):
            for key in ("n_opt", "d_opt", "tokens_per_param"):
                row[f"{key}@{c:.3g}"] = p[key]
        rows.append(row)
    intervals = {}
    if rows:
        intervals = {k: tuple(float(v) for v in np.percentile([r[k] for r in rows], [5, 95]))
                     for k in rows[0]}
    return {"intervals": intervals, "samples": rows, "num_samples": len(rows),
            "dropped": dropped, "method": method, "unavailable": ""}


def band(samples: list[dict], flops, key: str = "n"):
    """5th and 95th percentile of the fitted line N_opt(C) (key "n") or D_opt(C) ("d") over
    bootstrap samples, at each of `flops`."""
    flops = np.asarray(flops, dtype=np.float64)
    exponent = "a" if key == "n" else "b"
    lines = np.array([np.exp(s[f"log_k_{key}"] + s[exponent] * np.log(flops)) for s in samples])
    return np.percentile(lines, 5, axis=0), np.percentile(lines, 95, axis=0)
