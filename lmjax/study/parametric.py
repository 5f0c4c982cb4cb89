"""Chinchilla's Approach 3: the parametric loss L(N, D) = E + A/N^alpha + B/D^beta.

As in Hoffmann et al. 2022 (appendix D.2) the fit minimises the Huber loss (delta = 1e-3)
between log L_i and the log of the prediction, written LSE(a - alpha log N, b - beta log D, e)
with A = e^a, B = e^b, E = e^e, by L-BFGS from the paper's grid of initialisations; the best
local optimum wins. scipy's L-BFGS-B runs it within bounds, so a fit that runs to the edge of
its space (E -> 0, an exponent -> 0) shows up as a parameter at a bound and is reported as
degenerate. The objective is divided by delta so that its scale (a few units, not ~1e-6) keeps
L-BFGS-B's relative stopping test from ending early, the failure Besiroglu et al. 2024 found in
the original fit. Bootstrap intervals resample the runs with replacement and refit.
"""
import itertools
import math
import os
import sys

import numpy as np

from lmjax.errors import UsageError

NAMES = ("a", "b", "e", "alpha", "beta")
NUM_PARAMETERS = len(NAMES)
GRID = {  # the paper's grid of initialisations: 6 x 6 x 5 x 5 x 5 = 4500 points
    "a": np.arange(0.0, 25.01, 5.0),
    "b": np.arange(0.0, 25.01, 5.0),
    "e": np.arange(-1.0, 1.01, 0.5),
    "alpha": np.arange(0.0, 2.01, 0.5),
    "beta": np.arange(0.0, 2.01, 0.5),
}
# E in [1e-3, e^3 ~ 20] nats: a fit that wants E below 1e-3 has E -> 0, i.e. no irreducible loss.
BOUNDS = {"a": (-10.0, 40.0), "b": (-10.0, 40.0), "e": (math.log(1e-3), 3.0),
          "alpha": (0.0, 3.0), "beta": (0.0, 3.0)}
AT_BOUND = 1e-3  # distance from a bound (in the fitted coordinate) that counts as on it
COARSE_ITERATIONS, POLISH, ITERATIONS = 100, 4, 3000


def grid() -> np.ndarray:
    """(4500, 5) rows of (a, b, e, alpha, beta)."""
    return np.array(list(itertools.product(*(GRID[k] for k in NAMES))), dtype=np.float64)


def objective(theta, log_n, log_d, log_l, delta):
    """Huber(LSE(...) - log L) summed over runs and divided by delta, with its gradient.

    theta may be (5,) or (K, 5); the value is then (K,) (used to rank the grid).
    """
    theta = np.asarray(theta, dtype=np.float64)
    a, b, e, alpha, beta = (theta[..., i, None] for i in range(5))
    t1, t2 = a - alpha * log_n, b - beta * log_d
    top = np.maximum(np.maximum(t1, t2), e)
    w1, w2, w3 = np.exp(t1 - top), np.exp(t2 - top), np.exp(e - top)
    total = w1 + w2 + w3
    residual = top + np.log(total) - log_l
    magnitude = np.abs(residual)
    small = magnitude <= delta
    huber = np.where(small, 0.5 / delta * residual ** 2, magnitude - 0.5 * delta)
    # d value / d predicted, times the softmax weights d predicted / d term.
    dpred = np.where(small, residual / delta, np.sign(residual)) / total
    g1, g2 = dpred * w1, dpred * w2
    grad = np.stack([g1.sum(-1), g2.sum(-1), (dpred * w3).sum(-1), -(g1 * log_n).sum(-1),
                     -(g2 * log_d).sum(-1)], axis=-1)
    value = huber.sum(axis=-1)
    return value, grad


def check_runs(params, tokens, losses):
    params, tokens, losses = (np.asarray(x, dtype=np.float64).ravel()
                              for x in (params, tokens, losses))
    if not (len(params) == len(tokens) == len(losses)):
        raise UsageError("scaling fit: params, tokens and losses must have the same length")
    if len(params) < NUM_PARAMETERS + 1:
        raise UsageError(f"scaling fit: {len(params)} finished runs; L(N, D) has "
                         f"{NUM_PARAMETERS} parameters and needs at least {NUM_PARAMETERS + 1} "
                         "runs; run more sweep points")
    if not (np.all(params > 0) and np.all(tokens > 0) and np.all(losses > 0)):
        raise UsageError("scaling fit: every run needs params > 0, tokens > 0 and loss > 0")
    return params, tokens, losses


def _scipy_optimize():
    """scipy.optimize, its BLAS loaded with one thread where this process loads it first.

    L-BFGS-B's steps call BLAS on vectors of 5; with two OpenBLAS threads on 2 busy cores each
    fit took ~17x longer, spent synchronising threads. OpenBLAS reads the variable when it loads;
    it is put back afterwards so child processes are unaffected.
    """
    if "scipy.linalg" not in sys.modules:
        previous = os.environ.get("OPENBLAS_NUM_THREADS")
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        try:
            import scipy.optimize  # noqa: F401
        finally:
            if previous is None:
                del os.environ["OPENBLAS_NUM_THREADS"]
            else:
                os.environ["OPENBLAS_NUM_THREADS"] = previous
    from scipy import optimize
    return optimize


def _minimise(optimize, theta0, data, delta, iterations):
    bounds = [BOUNDS[k] for k in NAMES]
    result = optimize.minimize(objective, theta0, args=(*data, delta), jac=True,
                               method="L-BFGS-B", bounds=bounds,
                               options={"maxiter": iterations, "ftol": 1e-15, "gtol": 1e-10})
    return result.x, float(result.fun)


def to_coefs(theta) -> dict:
    a, b, e, alpha, beta = (float(x) for x in theta)
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}


def degeneracies(theta) -> list[str]:
    """Why a fit is not a result: parameters on their bounds (E -> 0, an exponent -> 0 or
    runaway)."""
    reasons = []
    for name, value in zip(NAMES, theta):
        low, high = BOUNDS[name]
        label = "E" if name == "e" else ("log A" if name == "a" else
                                         "log B" if name == "b" else name)
        shown = math.exp(value) if name == "e" else value
        if value - low < AT_BOUND:
            bound = math.exp(low) if name == "e" else low
            reasons.append(f"{label} = {shown:.3g} is at its lower bound {bound:.3g}"
                           + (" (no irreducible loss: E -> 0)" if name == "e" else ""))
        elif high - value < AT_BOUND:
            bound = math.exp(high) if name == "e" else high
            reasons.append(f"{label} = {shown:.3g} is at its upper bound {bound:.3g}")
    return reasons


def fit(params, tokens, losses, delta: float = 1e-3, starts: int = 64, init=None,
        polish: int = POLISH) -> dict:
    """Fits E, A, B, alpha, beta; returns them with `objective`, `theta` and `degenerate`.

    starts=0 runs L-BFGS-B from every one of the 4500 grid points, as the paper (minutes);
    starts=K from the K grid points of lowest objective (and from `init`, a previous theta, if
    given). The `polish` best after a short run continue to convergence.
    """
    params, tokens, losses = check_runs(params, tokens, losses)
    data = (np.log(params), np.log(tokens), np.log(losses))
    inits = grid()
    if starts:
        values, _ = objective(inits, *data, delta)
        inits = inits[np.argsort(values)[:starts]]
    if init is not None:
        inits = np.concatenate([np.asarray(init, dtype=np.float64)[None], inits])
    optimize = _scipy_optimize()
    # Every start gets a short run; the best few then run to convergence (a start sliding along
    # a flat valley would otherwise take the whole iteration budget).
    coarse = [_minimise(optimize, theta0, data, delta, COARSE_ITERATIONS) for theta0 in inits]
    coarse = sorted((c for c in coarse if math.isfinite(c[1])), key=lambda c: c[1])
    polished = [_minimise(optimize, theta, data, delta, ITERATIONS)
                for theta, _ in coarse[:polish]]
    if not polished:
        raise UsageError("scaling fit: L-BFGS-B found no finite optimum from any start")
    best_theta, best_value = min(polished, key=lambda c: c[1])
    coefs = to_coefs(best_theta)
    coefs.update(objective=best_value * delta, theta=[float(x) for x in best_theta],
                 num_runs=len(params), degenerate=degeneracies(best_theta))
    return coefs


def predict(coefs: dict, params, tokens):
    params, tokens = np.asarray(params, dtype=np.float64), np.asarray(tokens, dtype=np.float64)
    return (coefs["E"] + coefs["A"] / params ** coefs["alpha"]
            + coefs["B"] / tokens ** coefs["beta"])


def compute_optimal(coefs: dict, flops):
    """N_opt(C), D_opt(C) minimising L(N, D) subject to C = 6 N D (the paper's eq. 4)."""
    alpha, beta = coefs["alpha"], coefs["beta"]
    if alpha <= 0 or beta <= 0:
        nan = np.full(np.shape(flops), np.nan)
        return nan, nan
    g = (alpha * coefs["A"] / (beta * coefs["B"])) ** (1.0 / (alpha + beta))
    flops = np.asarray(flops, dtype=np.float64)
    n_opt = g * (flops / 6.0) ** (beta / (alpha + beta))
    d_opt = (flops / 6.0) ** (alpha / (alpha + beta)) / g
    return n_opt, d_opt


def derived(coefs: dict, budgets) -> dict:
    """What a fit says about compute-optimal training: a, b and tokens per parameter."""
    total = coefs["alpha"] + coefs["beta"]
    out = {"a": coefs["beta"] / total if total > 0 else math.nan,
           "b": coefs["alpha"] / total if total > 0 else math.nan}
    for flops in budgets:
        n_opt, d_opt = compute_optimal(coefs, flops)
        out[f"tokens_per_param@{flops:.3g}"] = float(d_opt / n_opt)
    return out


def bootstrap(params, tokens, losses, samples: int = 200, seed: int = 0, delta: float = 1e-3,
              starts: int = 2, budgets=(), center: dict | None = None) -> dict:
    """5th-95th percentiles of every fitted and derived number over refits of resampled runs.

    Each refit starts from the full-data optimum (`center`, fitted here if not given) and the
    `starts` best grid points for its resample. Returns {name: (p5, p95)}, the per-sample
    values under "samples" and the fraction of degenerate refits.
    """
    params, tokens, losses = check_runs(params, tokens, losses)
    center = center or fit(params, tokens, losses, delta=delta)
    rng = np.random.default_rng(seed)
    rows, degenerate = [], 0
    n = len(params)
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        if len(np.unique(idx)) < NUM_PARAMETERS + 1:
            continue
        refit = fit(params[idx], tokens[idx], losses[idx], delta=delta, starts=starts,
                    init=center["theta"], polish=2)
        degenerate += bool(refit["degenerate"])
        rows.append({**{k: refit[k] for k in ("E", "A", "B", "alpha", "beta")},
                     **derived(refit, budgets)})
    keys = list(rows[0]) if rows else []
    intervals = {k: tuple(float(v) for v in np.nanpercentile([r[k] for r in rows], [5, 95]))
                 for k in keys}
    return {"intervals": intervals, "samples": rows, "num_samples": len(rows),
            "degenerate_fraction": degenerate / max(1, len(rows))}
