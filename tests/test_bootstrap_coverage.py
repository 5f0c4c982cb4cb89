"""Approach 2's two bootstraps (lmjax.study.isoflop.RESAMPLERS) and the coverage check that
says how often each one's 90% interval holds a known exponent."""
import subprocess
import sys

import numpy as np
import pytest

from lmjax.study import coverage, isoflop
from test_scaling_fits import REPO, TRUE, as_results, synthetic_study, write_csv


def study_of(sizes, noise, seed=0):
    """test_scaling_fits' synthetic study, keeping `sizes` of each budget's 7 (by index)."""
    rows = synthetic_study(TRUE, noise=noise, seed=seed)
    return as_results([r for i, r in enumerate(rows) if i % 7 in sizes])


def test_leverage_adjusted_residuals_have_the_noise_variance():
    # Least-squares residuals of 6 runs under a 3-coefficient parabola have variance
    # sigma^2 (1 - h_i), on average half of sigma^2; adjusted, they have sigma^2 itself.
    rng = np.random.default_rng(0)
    params = np.tile(np.geomspace(1e5, 1e6, 6), 4000)
    budgets = np.repeat(np.arange(4000.0), 6)
    sigma = 0.02
    losses = 3.0 + 0.1 * np.log(params / 3e5) ** 2 + rng.normal(0, sigma, len(params))
    fitted, adjusted = isoflop.residuals(budgets, params, losses)
    assert np.mean((losses - fitted) ** 2) == pytest.approx(sigma ** 2 / 2, rel=0.03)
    assert np.mean(adjusted ** 2) == pytest.approx(sigma ** 2, rel=0.03)


def test_exact_parabolas_leave_nothing_to_resample():
    r = study_of(sizes=range(7), noise=0.0)
    fitted, adjusted = isoflop.residuals(r["budget"], r["params"], r["loss"])
    boot = isoflop.bootstrap(r["budget"], r["params"], r["tokens"], fitted, samples=20,
                             method="residuals")
    fit = isoflop.fit(r["budget"], r["params"], r["tokens"], fitted)
    assert boot["dropped"] == 0 and boot["num_samples"] == 20
    low, high = boot["intervals"]["a"]
    assert low == pytest.approx(fit["a"], abs=1e-9) and high == pytest.approx(fit["a"], abs=1e-9)


def test_three_sizes_a_budget_have_no_residual_interval():
    r = study_of(sizes=(1, 3, 5), noise=0.003)
    boot = isoflop.bootstrap(r["budget"], r["params"], r["tokens"], r["loss"], samples=20,
                             method="residuals")
    assert boot["intervals"] == {} and "no residual to resample" in boot["unavailable"]
    with pytest.raises(Exception, match="pass --sigma"):
        coverage.residual_sigma(r["budget"], r["params"], r["loss"])
    with pytest.raises(Exception, match="use one of pairs, residuals"):
        isoflop.bootstrap(r["budget"], r["params"], r["tokens"], r["loss"], method="jackknife")


def test_both_intervals_hold_a_known_exponent_about_nine_times_in_ten():
    """Four sizes a budget, as the study has: over 60 noisy draws about a known law, the
    residual bootstrap's 90% interval holds its exponent in at least 0.8 of them and the
    pairs' in at least 0.65 (measured: 0.90 and 0.75), and the trials' own spread of a
    brackets it."""
    r = study_of(sizes=(1, 2, 4, 5), noise=0.0)
    result = coverage.coverage(r["budget"], r["params"], r["tokens"], r["loss"], sigma=0.01,
                               trials=60, samples=150)
    assert result["trials"] >= 55
    low, high = result["estimates"]
    assert low < result["truth"] < high
    for method, m in result["methods"].items():
        assert (0.8 if method == "residuals" else 0.65) <= m["coverage"] <= 1.0, (method, m)
        assert m["trials"] >= 50
        # an interval as wide as the sampling spread, within a factor of 2
        assert (high - low) / 2 < m["median_width"] < 2 * (high - low), (method, m)


def test_cli_names_a_bad_bootstrap_method(tmp_path):
    write_csv(synthetic_study(TRUE, noise=0.003), tmp_path / "results.csv")
    out = subprocess.run([sys.executable, "-m", "lmjax.study.scaling",
                          f"--results={tmp_path / 'results.csv'}", "--bootstrap=jackknife"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --bootstrap=jackknife: use one of pairs, residuals"
    out = subprocess.run([sys.executable, "-m", "lmjax.study.coverage",
                          f"--results={tmp_path / 'results.csv'}", "--trials=12",
                          "--samples=12"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "holds truth" in out.stdout and "residuals" in out.stdout
