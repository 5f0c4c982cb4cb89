"""lmjax-scaling: Chinchilla's scaling-law fits (Hoffmann et al. 2022).

    lmjax-scaling --results=DIR/results.csv [--out=DIR] [--samples=200] ...
    lmjax-scaling --workdir=ROOT [--loss=eval_loss|train_loss] [--out=ROOT/scaling.png]

--results refits a scaling study from its CSV, running nothing: IsoFLOP parabolas (Approach 2)
and the parametric L(N, D) = E + A/N^alpha + B/D^beta (Approach 3), with bootstrap intervals,
beside the published numbers, and redraws its figures (see lmjax.study.refit).

--workdir fits Approach 3 to the finished runs of an lmjax-sweep ROOT (one summary.json per
run): N is the total parameter count (embeddings included, as Chinchilla counts them), D the
run's training tokens, L its final eval loss; the fit is lmjax.study.parametric's.
"""
import json
import os
import sys

import numpy as np

from lmjax import io
from lmjax.cli import ArgumentParser, check_output_file
from lmjax.errors import UsageError
from lmjax.study import published, refit
from lmjax.study.parametric import compute_optimal, fit, predict  # noqa: F401 (the API)

PAPER = published.HOFFMANN_PARAMETRIC
# Chinchilla's own budget (70B parameters x 1.4T tokens x 6), where the paper's ~20 tokens per
# parameter comes from.
CHINCHILLA_FLOPS = 5.76e23


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
    if coefs["degenerate"]:
        lines.append("DEGENERATE, not a result: " + "; ".join(coefs["degenerate"]))
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
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="ROOT of a finished lmjax-sweep")
    source.add_argument("--results", help="a scaling study's results.csv: refit and redraw")
    parser.add_argument("--loss", default="eval_loss", help="the loss field or column")
    parser.add_argument("--params", default="num_params", help="the column holding N")
    parser.add_argument("--out", default="", help="plot path (--workdir: default "
                        "ROOT/scaling.png) or output directory (--results: default beside it)")
    parser.add_argument("--curves", default="", help="--results: the study's curves.csv")
    parser.add_argument("--samples", type=int, default=200, help="--results: bootstrap "
                        "resamples")
    parser.add_argument("--bootstrap", default="pairs", help="--results: how Approach 2's "
                        "intervals resample the runs, a name in lmjax.study.isoflop.RESAMPLERS "
                        "(pairs: runs within each budget; residuals: fixed sizes, pooled "
                        "parabola residuals)")
    parser.add_argument("--huber_delta", type=float, default=1e-3)
    args = parser.parse_args(argv)
    if args.results:
        return refit.run(args)
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
