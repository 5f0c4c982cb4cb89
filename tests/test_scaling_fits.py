"""Chinchilla's Approach 2 and 3 fits: known laws recovered within their bootstrap intervals,
closed forms matched exactly, degenerate fits flagged, and lmjax-scaling --results end to end."""
import csv
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from lmjax.study import analysis, isoflop, parametric

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A CPU-scale law: a = beta / (alpha + beta) = 0.545.
TRUE = {"E": 1.8, "A": 60.0, "B": 250.0, "alpha": 0.30, "beta": 0.36}
BUDGETS = (1e13, 4e13, 1.6e14)


def synthetic_study(law, noise, seed=0):
    """Sizes around each budget's optimum, D = C / 6N, losses with log-normal noise: the design
    of a study's cooldown branches."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in BUDGETS:
        n_opt, _ = parametric.compute_optimal(law, c)
        for n in np.geomspace(n_opt / 5, n_opt * 5, 7):
            n = float(f"{n:.3g}")
            loss = parametric.predict(law, n, c / (6 * n)) * np.exp(rng.normal(0, noise))
            rows.append({"name": f"N{n:.3g}_C{c:.2g}", "num_params": n, "tokens": c / (6 * n),
                         "eval_loss": float(loss), "flops_budget": c, "status": "done",
                         "role": "cooldown"})
    return rows


def as_results(rows):
    return {"name": np.array([r["name"] for r in rows]),
            **{key: np.array([float(r[col]) for r in rows]) for key, col in (
                ("params", "num_params"), ("tokens", "tokens"), ("loss", "eval_loss"),
                ("budget", "flops_budget"))}}


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.slow  # bootstrap refits; test_isoflop_exponent_intervals_cover_the_law is fast
def test_noisy_study_recovers_the_law_within_its_intervals():
    results = as_results(synthetic_study(TRUE, noise=0.003))
    fits = analysis.analyse(results, samples=30, starts=32)
    param, boot = fits["parametric"], fits["parametric_bootstrap"]
    assert not param["degenerate"]
    for key in ("E", "A", "B", "alpha", "beta"):
        low, high = boot["intervals"][key]
        assert low <= TRUE[key] <= high, (key, param[key], (low, high))
        assert low <= param[key] <= high
    true_a = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    low, high = boot["intervals"]["a"]
    assert low <= true_a <= high
    iso = fits["isoflop"]
    assert iso["b"] == pytest.approx(1 - iso["a"], abs=1e-9)  # D_opt = C / 6 N_opt
    for c in BUDGETS:  # each budget's interval holds the law's loss-optimal size (eq. 4)
        n_true, _ = parametric.compute_optimal(TRUE, c)
        low, high = fits["isoflop_bootstrap"]["intervals"][f"n_opt@{c:.3g}"]
        assert low * 0.9 <= n_true <= high * 1.1  # a parabola in log N is not the exact curve
    assert fits["monotonicity"]["D at fixed N"]["violations"] == []


def test_isoflop_exponent_intervals_cover_the_law():
    """Approach 2 over ten noisy draws of the study: every a within 0.03 of the law's, and its
    90% interval holding the law's a in at least 7 of 10 (9 measured)."""
    true_a = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    covered = 0
    for seed in range(10):
        r = as_results(synthetic_study(TRUE, noise=0.003, seed=seed))
        fit = isoflop.fit(r["budget"], r["params"], r["tokens"], r["loss"])
        boot = isoflop.bootstrap(r["budget"], r["params"], r["tokens"], r["loss"],
                                 samples=200, seed=seed)
        assert abs(fit["a"] - true_a) < 0.03, seed
        low, high = boot["intervals"]["a"]
        covered += low <= true_a <= high
    assert covered >= 7


def test_noise_free_parametric_fit_is_exact():
    rng = np.random.default_rng(1)
    params = np.exp(rng.uniform(np.log(1e5), np.log(3e6), 15))
    tokens = np.exp(rng.uniform(np.log(1e6), np.log(1e8), 15))
    fit = parametric.fit(params, tokens, parametric.predict(TRUE, params, tokens), starts=16)
    for key, value in TRUE.items():
        assert fit[key] == pytest.approx(value, rel=1e-4)
    assert fit["degenerate"] == []
    # The objective's gradient is the one scipy needs: against central differences.
    data = (np.log(params), np.log(tokens), np.log(parametric.predict(TRUE, params, tokens)
                                                    * 1.01))
    theta = np.array([4.0, 5.5, 0.6, 0.3, 0.4])
    _, grad = parametric.objective(theta, *data, 1e-3)
    eps = 1e-6
    numeric = [(parametric.objective(theta + eps * e, *data, 1e-3)[0]
                - parametric.objective(theta - eps * e, *data, 1e-3)[0]) / (2 * eps)
               for e in np.eye(5)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5)


def test_isoflop_parabola_minimum_and_exponent_are_exact():
    # Loss exactly parabolic in log N with its minimum at N_opt = 0.1 C^0.5: a = 0.5, b = 0.5.
    budgets, params, losses = [], [], []
    for c in (1e12, 1e13, 1e14):
        n_opt = 0.1 * c ** 0.5
        for n in n_opt * np.array([0.25, 0.5, 1.3, 2.0, 4.0]):
            budgets.append(c)
            params.append(n)
            losses.append(3.0 + 0.2 * np.log(n / n_opt) ** 2)
    params = np.array(params)
    fit = isoflop.fit(budgets, params, np.array(budgets) / (6 * params), losses)
    assert fit["a"] == pytest.approx(0.5, abs=1e-9)
    assert fit["b"] == pytest.approx(0.5, abs=1e-9)
    for p in fit["profiles"]:
        assert p["n_opt"] == pytest.approx(0.1 * p["budget"] ** 0.5, rel=1e-9)
        assert p["loss_opt"] == pytest.approx(3.0)
        assert p["tokens_per_param"] == pytest.approx(p["budget"] / (6 * p["n_opt"] ** 2))
    # Grouping by 6ND recovers the budgets from runs rounded to whole steps.
    rounded = np.round(np.array(budgets) / (6 * params) / 512) * 512
    assert sorted(set(isoflop.group_budgets(params, rounded))) == pytest.approx(
        [1e12, 1e13, 1e14], rel=0.02)


def test_degenerate_fits_are_flagged_not_reported():
    # No irreducible loss: E runs to its lower bound.
    no_floor = {"E": 0.0, "A": 60.0, "B": 250.0, "alpha": 0.30, "beta": 0.36}
    results = as_results(synthetic_study(no_floor, noise=0.0))
    fit = parametric.fit(results["params"], results["tokens"], results["loss"], starts=16)
    assert any("E -> 0" in reason for reason in fit["degenerate"])
    # A budget whose loss rises in the middle has no minimum; one still falling at its largest
    # size has its minimum outside the sampled sizes.
    n = np.array([1e5, 2e5, 4e5, 8e5])
    assert "opens downwards" in isoflop.fit_profile(1e13, n, [3.0, 3.2, 3.2, 3.0])["degenerate"]
    assert "outside" in isoflop.fit_profile(1e13, n, [3.4, 3.2, 3.1, 3.05])["degenerate"]
    # Nearly flat and falling: the minimum lies at N = e^-500, where D / N is past any float;
    # neither N, D nor tokens per parameter is computed, and nothing overflows on the way.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flat = isoflop.fit_profile(1e13, n, 3.0 + 1e-6 * np.log(n) + 1e-9 * np.log(n) ** 2)
    assert "outside" in flat["degenerate"] and "n_opt" not in flat and "d_opt" not in flat
    fits = {"isoflop": isoflop.fit([1e13] * 4 + [1e14] * 4, np.tile(n, 2), np.ones(8),
                                   [3.0, 3.2, 3.2, 3.0] * 2)}
    assert "need at least 2" in fits["isoflop"]["degenerate"]


def test_stable_phase_check_compares_sizes_at_equal_tokens():
    def curve(n, losses, tokens=(1e5, 2e5, 4e5, 8e5)):
        return [{"role": "stable", "num_params": n, "tokens": d, "eval_loss": loss}
                for d, loss in zip(tokens, losses)]
    rows = (curve(1e5, [6.0, 5.0, 4.6, 4.4]) + curve(2e5, [6.1, 4.9, 4.5, 4.3])
            + curve(4e5, [5.5, 4.0], tokens=(1.4e5, 1.6e6)))
    check = analysis.stable_monotonicity(rows)
    # 2e5 vs 1e5 at 4 token counts (one worse); 4e5 vs 2e5 at 1.4e5 only (1.6e6 is outside):
    # 2e5's loss interpolated in log D there is 6.1 + (4.9 - 6.1) * log(1.4) / log(2) = 5.52.
    assert check["checked"] == 5
    assert [(v[1], round(v[3], 3)) for v in check["violations"]] == [("N=2e+05", 6.1)]


def test_decayed_check_interpolates_each_size_between_its_branches():
    # Three sizes with two or three branches each, at token counts no two sizes share.
    results = {"params": np.array([1e5, 1e5, 1e5, 2e5, 2e5, 4e5]),
               "tokens": np.array([1e6, 4e6, 1.6e7, 2e6, 8e6, 3e6]),
               "loss": np.array([5.0, 4.6, 4.3, 4.75, 4.2, 4.5])}
    check = analysis.decayed_monotonicity(results)
    # 2e5 at 2e6 against 1e5 halfway (in log D) between 5.0 and 4.6: 4.8 > 4.75, fine; at 8e6
    # halfway between 4.6 and 4.3: 4.45 > 4.2. 4e5 at 3e6 against 2e5 at log-fraction
    # log(1.5)/log(4) between 4.75 and 4.2: 4.59 > 4.5. No violations in 3 pairs.
    assert check == {"checked": 3, "violations": []}
    results["loss"][-1] = 4.6  # now above 2e5's interpolated 4.59
    check = analysis.decayed_monotonicity(results)
    expected = 4.75 + (4.2 - 4.75) * np.log(1.5) / np.log(4)
    assert [(v[1], round(v[2], 6), v[3]) for v in check["violations"]] == [
        ("N=4e+05", round(expected, 6), 4.6)]


def test_cli_refits_and_redraws_from_results_csv(tmp_path):
    rows = synthetic_study(TRUE, noise=0.003)
    write_csv(rows + [{**rows[0], "name": "stable", "role": "stable", "eval_loss": 9.0}],
              tmp_path / "results.csv")
    curves = []
    for i, row in enumerate(rows[:4]):
        for frac in (0.25, 0.5, 1.0):
            curves.append({"run": row["name"], "role": "cooldown" if i else "stable",
                           "num_params": row["num_params"], "tokens": frac * row["tokens"],
                           "eval_loss": row["eval_loss"] / frac ** 0.05})
    write_csv(curves, tmp_path / "curves.csv")
    out = subprocess.run([sys.executable, "-m", "lmjax.study.scaling",
                          f"--results={tmp_path / 'results.csv'}", "--samples=10"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    fits = json.load(open(tmp_path / "fits.json"))
    assert fits["num_runs"] == len(rows)  # the stable-phase row is not fitted
    assert abs(fits["parametric"]["alpha"] - TRUE["alpha"]) < 0.05
    assert "Hoffmann" in out.stdout and "Besiroglu" in out.stdout and "0.3478" in out.stdout
    assert "90% CI" in out.stdout
    for name in ("isoflop.png", "parametric.png", "wsd_curves.png"):
        assert os.path.getsize(tmp_path / name) > 20000, name
    assert open(tmp_path / "report.txt").read().strip() in out.stdout

    write_csv([{"num_params": 1, "eval_loss": 2}], tmp_path / "bad.csv")
    out = subprocess.run([sys.executable, "-m", "lmjax.study.scaling",
                          f"--results={tmp_path / 'bad.csv'}"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: --results={tmp_path / 'bad.csv'}: no column 'tokens'; a scaling study's CSV "
        "has num_params, tokens and eval_loss"]
