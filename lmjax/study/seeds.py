"""Run-to-run noise of a scaling study, from reruns of some of its points with another seed, and
the IsoFLOP exponents' interval once that noise is allowed for.

    python -m lmjax.study.seeds --results=DIR/results.csv --rerun=DIR2/results.csv [--out=TXT]
        [--plot=PNG] [--merged=DIR3]

--rerun is the results.csv of the same study (or of its first budgets) run with another
`seed` (other initial weights and another data order). Its decayed runs are paired with the
study's by (N, D). The mean of the paired differences is the part of the noise a seed's runs
share (one data order for every size), which moves no IsoFLOP minimum; half the variance of the
differences about that mean is one run's own noise variance sigma^2, with a 90% chi-square
interval. The study's Approach-2 fit is then refitted with independent N(0, sigma^2) draws
added to every run's loss (a parametric bootstrap): the 5th-95th percentiles of a and b say how
far seed noise alone moves them, beside lmjax-scaling's bootstrap interval, which sees only the
scatter of the study's own 4-5 runs per budget about their parabolas.

--merged writes DIR3/results.csv with both seeds' runs in one table. Where the rerun covers
every point, `lmjax-scaling --results=DIR3/results.csv` fits each profile to two runs per size
(the same parabola as one through the seeds' mean) and its bootstrap, resampling runs, sees
the seed noise.
"""
import os
import sys

import numpy as np

from lmjax.cli import ArgumentParser, check_output_file
from lmjax.errors import UsageError
from lmjax.study import analysis, isoflop
from lmjax.study.wsd import read_csv, write_csv


def pair(study: dict, rerun: dict) -> list[dict]:
    """Decayed runs present in both, matched by (N, D): {"params", "tokens", "loss", "rerun"}."""
    reran = {(float(n), float(d)): float(loss)
             for n, d, loss in zip(rerun["params"], rerun["tokens"], rerun["loss"])}
    rows = [{"params": float(n), "tokens": float(d), "loss": float(loss),
             "rerun": reran[(float(n), float(d))]}
            for n, d, loss in zip(study["params"], study["tokens"], study["loss"])
            if (float(n), float(d)) in reran]
    if len(rows) < 2:
        raise UsageError(f"--rerun: {len(rows)} of its runs match the study's by (num_params, "
                         "tokens); rerun at least 2 of the study's points with another seed")
    return rows


def noise(rows: list[dict]) -> dict:
    """sigma of one run's loss, from the paired differences, with its 90% interval."""
    from scipy import stats
    diffs = np.array([r["rerun"] - r["loss"] for r in rows])
    # A seed also fixes the data order every size reads, so its runs share part of their
    # noise: their mean difference. A shift shared by a whole budget leaves its IsoFLOP minimum
    # where it is, so sigma is the spread about that mean (n - 1 degrees of freedom).
    dof = len(diffs) - 1
    variance = float(np.sum((diffs - diffs.mean()) ** 2)) / dof / 2
    low, high = (variance * dof / stats.chi2.ppf(q, dof) for q in (0.95, 0.05))
    return {"sigma": variance ** 0.5, "interval": (low ** 0.5, high ** 0.5), "pairs": len(diffs),
            "mean_difference": float(diffs.mean())}


def noisy_refits(study: dict, sigma: float, samples: int = 1000, seed: int = 0) -> dict:
    """a and b refitted with N(0, sigma^2) added to every run's loss: their 5th-95th
    percentiles, over the refits whose every budget keeps a minimum inside its sizes."""
    rng = np.random.default_rng(seed)
    values, dropped = {"a": [], "b": []}, 0
    for _ in range(samples):
        losses = study["loss"] + rng.normal(0.0, sigma, size=len(study["loss"]))
        refit = isoflop.fit(study["budget"], study["params"], study["tokens"], losses)
        if refit["degenerate"] or any(p["degenerate"] for p in refit["profiles"]):
            dropped += 1
            continue
        for key in values:
            values[key].append(refit[key])
    if not values["a"]:
        raise UsageError("every noisy refit lost a budget's minimum; the study's profiles are "
                         "too flat for this noise")
    return {key: tuple(float(x) for x in np.percentile(v, [5, 95]))
            for key, v in values.items()} | {"used": len(values["a"]), "dropped": dropped,
                                            "samples": values["a"]}


def merge(study_csv: str, rerun_csv: str, out_dir: str) -> int:
    """OUT/results.csv: every row of the study and of its rerun, with a `seed_run` column (0 for
    the study's rows, 1 for the rerun's); returns the number of rows."""
    tables = [read_csv(path) for path in (study_csv, rerun_csv)]
    fields = list(dict.fromkeys([k for table in tables for row in table for k in row]))
    rows = [{**row, "seed_run": i} for i, table in enumerate(tables) for row in table]
    os.makedirs(out_dir, exist_ok=True)
    write_csv(os.path.join(out_dir, "results.csv"), fields + ["seed_run"], rows)
    return len(rows)


def plot(rows, sigma: dict, fit: dict, refits: dict, point_interval, path: str) -> None:
    """Each run's loss at both seeds, and a over the noisy refits beside the other intervals."""
    from lmjax.study import figures
    _, plt = figures._pyplot()
    fig, (ax_pairs, ax_a) = plt.subplots(1, 2, figsize=(11, 4.5))
    first = np.array([r["loss"] for r in rows])
    second = np.array([r["rerun"] for r in rows])
    span = np.array([min(first.min(), second.min()), max(first.max(), second.max())])
    ax_pairs.scatter(first, second, c=np.log([r["params"] for r in rows]), cmap="viridis")
    ax_pairs.plot(span, span, "k:", label="equal")
    ax_pairs.plot(span, span + sigma["mean_difference"], "k--",
                  label=f"shared shift {sigma['mean_difference']:+.4f}")
    ax_pairs.set(xlabel="decayed eval loss, the study's seed", ylabel="the rerun's seed",
                 title=f"{len(rows)} runs at two seeds: sigma = {sigma['sigma']:.4f}")
    ax_pairs.legend(fontsize=8)
    ax_a.hist(refits["samples"], bins=40, color="tab:blue", alpha=0.6,
              label=f"refits with seed noise: 90% [{refits['a'][0]:.3f}, {refits['a'][1]:.3f}]")
    ax_a.axvline(fit["a"], color="k", label=f"the study's a = {fit['a']:.3f}")
    if point_interval:
        ax_a.axvspan(*point_interval, color="tab:orange", alpha=0.3,
                     label=f"resampling its runs: [{point_interval[0]:.3f}, "
                           f"{point_interval[1]:.3f}]")
    ax_a.axvline(0.5, color="tab:red", linestyle="--", label="Chinchilla: 0.5")
    ax_a.set(xlabel="a (N_opt ∝ C^a)", ylabel="refits", title="Approach 2's a")
    ax_a.legend(fontsize=8)
    fig.tight_layout()
    figures._save(fig, path)


def report(rows, sigma: dict, fit: dict, refits: dict, point_interval=None) -> str:
    lines = [f"{'N':>10} {'D':>10} {'seed 0':>8} {'rerun':>8} {'diff':>8}"]
    for r in rows:
        lines.append(f"{r['params']:>10.3g} {r['tokens']:>10.3g} {r['loss']:>8.4f} "
                     f"{r['rerun']:>8.4f} {r['rerun'] - r['loss']:>+8.4f}")
    low, high = sigma["interval"]
    lines.append(f"shared by the rerun's runs: a mean difference of "
                 f"{sigma['mean_difference']:+.4f}")
    lines.append(f"one run's own noise: sigma = {sigma['sigma']:.4f} [{low:.4f}, {high:.4f}] "
                 f"(90%, from {sigma['pairs']} pairs about their mean)")
    lines.append(f"Approach 2 of the study: a = {fit['a']:.3f}, b = {fit['b']:.3f}")
    if point_interval:
        lines.append(f"  lmjax-scaling's bootstrap of its runs: a in "
                     f"[{point_interval[0]:.3f}, {point_interval[1]:.3f}]")
    lines.append(f"  with seed noise sigma = {sigma['sigma']:.4f} added to every run "
                 f"({refits['used']} refits, {refits['dropped']} dropped without a minimum): "
                 f"a in [{refits['a'][0]:.3f}, {refits['a'][1]:.3f}], "
                 f"b in [{refits['b'][0]:.3f}, {refits['b'][1]:.3f}]")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", required=True, help="the study's results.csv")
    parser.add_argument("--rerun", required=True,
                        help="results.csv of some of its points run with another seed")
    parser.add_argument("--samples", type=int, default=1000, help="noisy refits")
    parser.add_argument("--out", default="", help="also write the report to this file")
    parser.add_argument("--plot", default="", help="draw the pairs and a's spread (PNG)")
    parser.add_argument("--merged", default="",
                        help="write DIR/results.csv holding both seeds' runs, for lmjax-scaling")
    args = parser.parse_args(argv)
    try:
        if args.samples < 10:
            raise UsageError(f"--samples={args.samples}: use at least 10 refits")
        for flag, path in (("--out", args.out), ("--plot", args.plot)):
            if path:
                check_output_file(path, flag)
        if args.merged:
            merged = os.path.abspath(os.path.join(args.merged, "results.csv"))
            if os.path.exists(args.merged) and not os.path.isdir(args.merged):
                raise UsageError(f"--merged={args.merged}: exists and is not a directory")
            if merged in (os.path.abspath(args.results), os.path.abspath(args.rerun)):
                raise UsageError(f"--merged={args.merged}: holds an input results.csv; "
                                 "write elsewhere")
        study = analysis.read_results(args.results)
        rows = pair(study, analysis.read_results(args.rerun))
        sigma = noise(rows)
        fit = isoflop.fit(study["budget"], study["params"], study["tokens"], study["loss"])
        if fit["degenerate"]:
            raise UsageError(f"--results: Approach 2 is degenerate ({fit['degenerate']})")
        refits = noisy_refits(study, sigma["sigma"], args.samples)
        boot = isoflop.bootstrap(study["budget"], study["params"], study["tokens"],
                                 study["loss"])
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = report(rows, sigma, fit, refits, boot["intervals"].get("a"))
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.plot:
        plot(rows, sigma, fit, refits, boot["intervals"].get("a"), args.plot)
        print(f"wrote {args.plot}")
    if args.merged:
        count = merge(args.results, args.rerun, args.merged)
        print(f"wrote {os.path.join(args.merged, 'results.csv')}: {count} runs of both seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
