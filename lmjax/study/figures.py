"""The figures of a scaling study: IsoFLOP profiles, compute-optimal N and D against C, the
parametric fit against the measured losses, and the WSD runs' loss curves with their cooldowns."""
import csv

import numpy as np

from lmjax.study import isoflop, parametric, published


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return matplotlib, plt


def _save(fig, path: str) -> None:
    # Written beside the target and renamed, so a reader never sees half a PNG.
    from etils import epath
    import matplotlib.pyplot as plt
    out = epath.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / (out.name + ".tmp")
    with tmp.open("wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    tmp.replace(out)
    plt.close(fig)


def isoflop_profiles(results: dict, analysis: dict, path: str) -> None:
    """Loss against N per budget with its parabola and minimum; N_opt and D_opt against C."""
    matplotlib, plt = _pyplot()
    fig, (ax, ax_opt) = plt.subplots(1, 2, figsize=(13, 5))
    profiles = analysis["isoflop"]["profiles"]
    norm = matplotlib.colors.LogNorm(min(p["budget"] for p in profiles),
                                     max(p["budget"] for p in profiles) * 1.001)
    cmap = matplotlib.colormaps["viridis"]
    for p in profiles:
        color = cmap(norm(p["budget"]))
        mask = results["budget"] == p["budget"]
        ax.scatter(results["params"][mask], results["loss"][mask], color=color, edgecolors="k",
                   zorder=3, label=f"C = {p['budget']:.2g}" + (" (degenerate)"
                                                                if p["degenerate"] else ""))
        if "coefficients" in p:
            n = results["params"][mask]
            grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 100)
            ax.plot(grid, np.polyval(p["coefficients"], np.log(grid)), color=color)
        if "n_opt" in p:
            ax.plot([p["n_opt"]], [p["loss_opt"]], marker="*", color=color, markersize=14,
                    markeredgecolor="k", zorder=4)
    ax.set(xscale="log", xlabel="parameters N", ylabel="eval loss (nats/token)",
           title="IsoFLOP profiles, parabolas in log N (★ = loss-optimal N)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    iso, boot = analysis["isoflop"], analysis["isoflop_bootstrap"]
    usable = [p for p in profiles if "n_opt" in p and not p["degenerate"]]
    c = np.array([p["budget"] for p in usable])
    if len(usable):
        ax_opt.scatter(c, [p["n_opt"] for p in usable], color="C0", edgecolors="k", zorder=3,
                       label="N_opt (parabola minimum)")
        ax_opt.scatter(c, [p["d_opt"] for p in usable], color="C1", marker="s",
                       edgecolors="k", zorder=3, label="D_opt = C / 6 N_opt")
    if not iso["degenerate"]:
        grid = np.geomspace(c.min() / 2, c.max() * 2, 50)
        for key, color, exponent in (("n", "C0", "a"), ("d", "C1", "b")):
            line = np.exp(iso[f"log_k_{key}"] + iso[exponent] * np.log(grid))
            low, high = boot["intervals"].get(exponent, (np.nan, np.nan))
            ax_opt.plot(grid, line, color=color,
                        label=f"{exponent} = {iso[exponent]:.2f} [{low:.2f}, {high:.2f}]")
            if boot["samples"]:
                lo, hi = isoflop.band(boot["samples"], grid, key)
                ax_opt.fill_between(grid, lo, hi, color=color, alpha=0.2)
            # The paper's slope through the middle of the fitted line, for comparison.
            mid = np.exp(np.mean(np.log(grid)))
            at_mid = np.exp(iso[f"log_k_{key}"] + iso[exponent] * np.log(mid))
            ax_opt.plot(grid, at_mid * (grid / mid) ** published.EQUAL_SCALING[exponent],
                        color=color, linestyle=":", label=f"{exponent} = 0.50 (Chinchilla)")
    ax_opt.set(xscale="log", yscale="log", xlabel="FLOPs C = 6ND", ylabel="N_opt, D_opt",
               title="compute-optimal N and D (bands: bootstrap 5th-95th percentile)")
    ax_opt.grid(alpha=0.3, which="both")
    # Under a decade of C, matplotlib labels the minor ticks too, and they overlap.
    ax_opt.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if ax_opt.get_legend_handles_labels()[0]:
        ax_opt.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def parametric_fit(results: dict, analysis: dict, path: str) -> None:
    """Predicted against observed loss, and the residuals in log loss against N."""
    matplotlib, plt = _pyplot()
    fit = analysis["parametric"]
    predicted = parametric.predict(fit, results["params"], results["tokens"])
    fig, (ax, ax_res) = plt.subplots(1, 2, figsize=(12, 4.8))
    norm = matplotlib.colors.LogNorm(results["tokens"].min(), results["tokens"].max() * 1.001)
    points = ax.scatter(results["loss"], predicted, c=results["tokens"], norm=norm,
                        cmap="plasma", edgecolors="k", zorder=3)
    lo = min(results["loss"].min(), predicted.min())
    hi = max(results["loss"].max(), predicted.max())
    ax.plot([lo, hi], [lo, hi], color="gray", linestyle="--", label="predicted = observed")
    title = (f"L = {fit['E']:.3g} + {fit['A']:.3g}/N^{fit['alpha']:.2f} + "
             f"{fit['B']:.3g}/D^{fit['beta']:.2f}")
    if fit["degenerate"]:
        title = "DEGENERATE fit: " + title
    ax.set(xlabel="observed eval loss", ylabel="predicted eval loss", title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.colorbar(points, ax=ax, label="tokens D")
    residual = np.log(results["loss"]) - np.log(predicted)
    ax_res.scatter(results["params"], residual, c=results["tokens"], norm=norm, cmap="plasma",
                   edgecolors="k", zorder=3)
    ax_res.axhline(0, color="gray", linestyle="--")
    ax_res.set(xscale="log", xlabel="parameters N", ylabel="log observed - log predicted",
               title=f"residuals (RMS {np.sqrt(np.mean(residual ** 2)):.2g} in log loss)")
    ax_res.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def read_curves(path: str) -> list[dict]:
    """Rows of a study's curves.csv: run, role, parent, tokens, eval_loss (and train_loss)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def wsd_curves(rows: list[dict], path: str, key: str = "eval_loss") -> bool:
    """Each size's stable run (solid) and its cooldown branches (dashed, ending in a dot)
    against tokens; one colour per size. Returns False when there is nothing to draw."""
    matplotlib, plt = _pyplot()
    runs = {}
    for row in rows:
        if row.get(key) not in ("", None):
            runs.setdefault(row["run"], []).append(row)
    if not runs:
        return False
    sizes = sorted({float(r[0]["num_params"]) for r in runs.values()})
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(sizes)))
    fig, ax = plt.subplots(figsize=(10, 6))
    labelled = set()  # a size's stable phase may come in several segments
    for run, records in sorted(runs.items()):
        size = float(records[0]["num_params"])
        color = colors[sizes.index(size)]
        xs = [float(r["tokens"]) for r in records]
        ys = [float(r[key]) for r in records]
        if records[0]["role"] == "stable":
            label = f"N = {size:.3g}" if size not in labelled else None
            labelled.add(size)
            ax.plot(xs, ys, color=color, linewidth=1.5, label=label)
        else:
            ax.plot(xs, ys, color=color, linestyle="--", linewidth=1.0)
            ax.plot(xs[-1:], ys[-1:], "o", color=color, markeredgecolor="k", markersize=5)
    ax.set(xscale="log", xlabel="tokens D", ylabel=key.replace("_", " "),
           title="WSD stable runs (solid) and cooldown branches (dashed, ● = decayed end)")
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: float(labels[i].split("= ")[1]))
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8)
    _save(fig, path)
    return True
