"""Chinchilla scaling-law fit (Hoffmann et al. 2022, approach 3) over a finished sweep.

    L(N, D) = E + A / N^alpha + B / D^beta

N is the total parameter count (embeddings included, as Chinchilla counts them), D the number of
training tokens, L the final eval loss of each run. As in the paper's appendix D.2, the fit
minimises the Huber loss (delta = 1e-3) between the log of the predicted loss, written as
LSE(a - alpha log N, b - beta log D, e) with A = exp(a), B = exp(b), E = exp(e), and the log of
the observed loss, with L-BFGS started from every point of the paper's grid of initialisations;
the best local optimum wins.

    lmjax-scaling --workdir=ROOT [--loss=eval_loss|train_loss] [--out=ROOT/scaling.png]
"""
import itertools
import json
import math
import os
import sys

import numpy as np

from lmjax import io
from lmjax.cli import ArgumentParser, check_output_file
from lmjax.errors import UsageError

# Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", eq. 10 (approach 3).
PAPER = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
# Chinchilla's own budget (70B parameters x 1.4T tokens x 6), where the paper's ~20 tokens per
# parameter comes from.
CHINCHILLA_FLOPS = 5.76e23
NUM_PARAMETERS = 5  # E, A, B, alpha, beta

# The paper's grid of initialisations (appendix D.2).
GRID = {
    "alpha": np.arange(0.0, 2.01, 0.5),
    "beta": np.arange(0.0, 2.01, 0.5),
    "e": np.arange(-1.0, 1.01, 0.5),
    "a": np.arange(0.0, 25.01, 5.0),
    "b": np.arange(0.0, 25.01, 5.0),
}


def _initial_points() -> np.ndarray:
    """(num_inits, 5) rows of (a, b, e, alpha, beta)."""
    rows = itertools.product(GRID["a"], GRID["b"], GRID["e"], GRID["alpha"], GRID["beta"])
    return np.array(list(rows), dtype=np.float64)


def fit(params, tokens, losses, delta: float = 1e-3, coarse_iterations: int = 30,
        keep: int = 64, iterations: int = 500) -> dict:
    """Fits E, A, B, alpha, beta to runs (N_i, D_i, L_i); returns them with the objective.

    Every grid point gets `coarse_iterations` L-BFGS steps; the `keep` best continue for
    `iterations` more (the full grid for the whole run costs ~30x more for the same optimum).
    """
    import jax
    import jax.numpy as jnp
    import optax

    params, tokens, losses = (np.asarray(x, dtype=np.float64) for x in (params, tokens, losses))
    if not (len(params) == len(tokens) == len(losses)):
        raise UsageError("scaling fit: params, tokens and losses must have the same length")
    if len(params) < NUM_PARAMETERS:
        raise UsageError(f"scaling fit: {len(params)} finished runs, fewer than the "
                         f"{NUM_PARAMETERS} parameters of L(N, D); run more sweep points")
    if np.any(params <= 0) or np.any(tokens <= 0) or np.any(losses <= 0):
        raise UsageError("scaling fit: every run needs params > 0, tokens > 0 and loss > 0")

    # f64: the Huber objective near its optimum is ~1e-7 per point, below f32's resolution of the
    # log-loss.
    with jax.enable_x64(True):
        log_n, log_d, log_l = (jnp.asarray(np.log(x)) for x in (params, tokens, losses))

        def objective(theta):
            a, b, e, alpha, beta = theta
            predicted = jax.nn.logsumexp(
                jnp.stack([a - alpha * log_n, b - beta * log_d, jnp.broadcast_to(e, log_n.shape)]),
                axis=0)
            return jnp.sum(optax.losses.huber_loss(predicted, log_l, delta=delta))

        solver = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(objective)

        def minimise(theta0, iterations):
            def step(carry, _):
                theta, state = carry
                value, grad = value_and_grad(theta, state=state)
                updates, state = solver.update(grad, state, theta, value=value, grad=grad,
                                               value_fn=objective)
                theta = optax.apply_updates(theta, updates)
                return (theta, state), None

            (theta, _), _ = jax.lax.scan(step, (theta0, solver.init(theta0)), None,
                                         length=iterations)
            return theta, objective(theta)

        def run(inits, iterations):
            thetas, values = jax.jit(jax.vmap(lambda t: minimise(t, iterations)))(inits)
            values = jnp.where(jnp.isfinite(values), values, jnp.inf)
            return np.asarray(thetas), np.asarray(values)

        thetas, values = run(jnp.asarray(_initial_points()), coarse_iterations)
        survivors = np.argsort(values)[:keep]
        thetas, values = run(jnp.asarray(thetas[survivors]), iterations)

    best = int(np.argmin(values))
    a, b, e, alpha, beta = (float(x) for x in thetas[best])
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta,
            "objective": float(values[best]), "num_runs": len(params)}


def predict(coefs: dict, params, tokens):
    params, tokens = np.asarray(params, dtype=np.float64), np.asarray(tokens, dtype=np.float64)
    return (coefs["E"] + coefs["A"] / params ** coefs["alpha"]
            + coefs["B"] / tokens ** coefs["beta"])


def compute_optimal(coefs: dict, flops):
    """N_opt(C), D_opt(C) minimising L(N, D) subject to C = 6 N D (the paper's eq. 4)."""
    alpha, beta = coefs["alpha"], coefs["beta"]
    g = (alpha * coefs["A"] / (beta * coefs["B"])) ** (1.0 / (alpha + beta))
    flops = np.asarray(flops, dtype=np.float64)
    n_opt = g * (flops / 6.0) ** (beta / (alpha + beta))
    d_opt = (flops / 6.0) ** (alpha / (alpha + beta)) / g
    return n_opt, d_opt


def load_runs(root: str, loss_key: str = "eval_loss"):
    """(names, N, D, L) of every finished run under ROOT (a directory holding summary.json)."""
    from etils import epath
    root_path = epath.Path(root)
    if not root_path.is_dir():
        raise UsageError(f"--workdir={root}: no such directory; pass the ROOT of an lmjax-sweep")
    names, rows = [], []
    for summary in sorted(root_path.glob("*/summary.json")):
        record = io.read_json(summary)
        loss = record.get(loss_key)
        if loss is None or not record.get("num_params") or not record.get("tokens"):
            continue
        names.append(summary.parent.name)
        rows.append((record["num_params"], record["tokens"], loss))
    rows = np.array(rows, dtype=np.float64).reshape(-1, 3)
    return names, rows[:, 0], rows[:, 1], rows[:, 2]


def format_report(coefs: dict, flops_budgets) -> str:
    lines = [f"{'':8}{'fit':>12}{'Hoffmann et al. 2022':>24}"]
    for key in ("E", "A", "B", "alpha", "beta"):
        lines.append(f"{key:8}{coefs[key]:>12.4g}{PAPER[key]:>24.4g}")
    lines.append(f"fit over {coefs['num_runs']} runs, Huber objective {coefs['objective']:.3g}")
    lines.append("compute-optimal tokens per parameter, D_opt/N_opt at C = 6ND:")
    for flops in flops_budgets:
        n_fit, d_fit = compute_optimal(coefs, flops)
        n_paper, d_paper = compute_optimal(PAPER, flops)
        lines.append(f"  C = {flops:.3g} FLOPs: fit {d_fit / n_fit:.3g} (N_opt {n_fit:.3g}), "
                     f"paper {d_paper / n_paper:.3g} (N_opt {n_paper:.3g})")
    return "\n".join(lines)


def plot(coefs: dict, params, tokens, losses, path: str) -> None:
    """Iso-FLOP curves of the fit with the runs on them, and loss against tokens per model size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from etils import epath

    flops = 6.0 * params * tokens
    fig, (ax_iso, ax_tokens) = plt.subplots(1, 2, figsize=(12, 4.8))
    budgets = np.geomspace(flops.min(), flops.max(), 5)
    norm = matplotlib.colors.LogNorm(flops.min(), flops.max())
    cmap = matplotlib.colormaps["viridis"]
    n_grid = np.geomspace(params.min() / 3, params.max() * 3, 200)
    for c in budgets:
        ax_iso.plot(n_grid, predict(coefs, n_grid, c / (6 * n_grid)), color=cmap(norm(c)),
                    label=f"C = {c:.2g}")
        n_opt, d_opt = compute_optimal(coefs, c)
        ax_iso.plot([n_opt], [predict(coefs, n_opt, d_opt)], "k*", markersize=8)
    points = ax_iso.scatter(params, losses, c=flops, norm=norm, cmap=cmap, edgecolors="k",
                            zorder=3)
    fig.colorbar(points, ax=ax_iso, label="run FLOPs (6ND)")
    ax_iso.set(xscale="log", xlabel="parameters N", ylabel="eval loss",
               title="iso-FLOP curves of the fit (★ = compute-optimal N)")
    ax_iso.legend(fontsize=7)

    d_grid = np.geomspace(tokens.min() / 2, tokens.max() * 2, 200)
    sizes = np.unique(params)
    size_colors = matplotlib.colormaps["plasma"](np.linspace(0, 0.85, len(sizes)))
    for n, color in zip(sizes, size_colors):
        mask = params == n
        ax_tokens.scatter(tokens[mask], losses[mask], color=color, edgecolors="k", zorder=3)
        ax_tokens.plot(d_grid, predict(coefs, n, d_grid), color=color, label=f"N = {n:.3g}")
    ax_tokens.set(xscale="log", xlabel="training tokens D", ylabel="eval loss",
                  title=(f"L = {coefs['E']:.3g} + {coefs['A']:.3g}/N^{coefs['alpha']:.2f}"
                         f" + {coefs['B']:.3g}/D^{coefs['beta']:.2f}"))
    ax_tokens.legend(fontsize=7)
    fig.tight_layout()
    out = epath.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = ArgumentParser(prog="lmjax-scaling", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="ROOT of a finished lmjax-sweep")
    parser.add_argument("--loss", default="eval_loss", choices=("eval_loss", "train_loss"))
    parser.add_argument("--out", default="", help="plot path (default ROOT/scaling.png)")
    parser.add_argument("--huber_delta", type=float, default=1e-3)
    args = parser.parse_args(argv)
    try:
        if not args.huber_delta > 0:
            raise UsageError(f"--huber_delta={args.huber_delta}: must be > 0 (e.g. 1e-3)")
        check_output_file(args.out or os.path.join(args.workdir, "scaling.png"), "--out")
        names, params, tokens, losses = load_runs(args.workdir, args.loss)
        coefs = fit(params, tokens, losses, delta=args.huber_delta)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, n, d, loss in zip(names, params, tokens, losses):
        fitted = float(predict(coefs, n, d))
        print(f"{name:48} N={n:10.4g} D={d:10.4g} loss={loss:.4f} fit={fitted:.4f}")
    flops = 6.0 * params * tokens
    print(format_report(coefs, [float(flops.max()), CHINCHILLA_FLOPS]))
    out = args.out or os.path.join(args.workdir, "scaling.png")
    plot(coefs, params, tokens, losses, out)
    from etils import epath
    epath.Path(args.workdir, "scaling.json").write_text(json.dumps(coefs, indent=1) + "\n")
    print(f"wrote {out} and {os.path.join(args.workdir, 'scaling.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
