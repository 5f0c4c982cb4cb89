"""lmjax.study.seeds: one run's noise from reruns with another seed, and the IsoFLOP exponents
refitted with that noise added."""
import numpy as np
import pytest

from lmjax.study import isoflop, parametric, seeds
from tests.test_scaling_fits import TRUE, as_results, synthetic_study, write_csv


def with_additive_noise(rows, sigma, seed):
    """The law's exact losses plus N(0, sigma^2): a study run with another seed."""
    rng = np.random.default_rng(seed)
    out = []
    for row in rows:
        n, d = row["num_params"], row["tokens"]
        exact = float(parametric.predict(TRUE, n, d))
        out.append({**row, "eval_loss": exact + rng.normal(0.0, sigma)})
    return out


def test_noise_and_the_exponent_intervals_cover_the_truth_nine_times_in_ten():
    """Over 40 replicate studies, each with a rerun, both 90% intervals (sigma from the pairs,
    a from the noisy refits) cover the true values about 90% of the time."""
    sigma, true_a = 0.01, TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    exact = synthetic_study(TRUE, noise=0.0)
    estimates, sigma_covered, a_covered = [], 0, 0
    for replicate in range(40):
        study, rerun = (with_additive_noise(exact, sigma, 2 * replicate + s) for s in (1, 2))
        # The rerun's data order lowers all its losses alike: no part of one run's noise.
        rerun = [{**r, "eval_loss": r["eval_loss"] - 0.03} for r in rerun]
        rows = seeds.pair(as_results(study), as_results(rerun))
        assert len(rows) == len(exact)
        estimate = seeds.noise(rows)
        assert estimate["mean_difference"] == pytest.approx(-0.03, abs=sigma)  # ~3 std errors
        estimates.append(estimate["sigma"])
        sigma_covered += estimate["interval"][0] < sigma < estimate["interval"][1]
        refits = seeds.noisy_refits(as_results(study), estimate["sigma"], samples=100,
                                    seed=replicate)
        a_covered += refits["a"][0] < true_a < refits["a"][1]
    # The estimate is one run's sigma, not the difference's sigma * sqrt(2).
    assert np.mean(estimates) == pytest.approx(sigma, rel=0.05)
    assert 32 <= sigma_covered <= 40 and 30 <= a_covered <= 40, (sigma_covered, a_covered)


def test_refits_without_noise_are_the_fit_and_the_command_runs(tmp_path, capsys):
    study, rerun = (with_additive_noise(synthetic_study(TRUE, noise=0.0), 0.01, s)
                    for s in (1, 2))
    results = as_results(study)
    # No noise, no spread: every refit is the fit itself.
    still = seeds.noisy_refits(results, 0.0, samples=10)
    fit = isoflop.fit(results["budget"], results["params"], results["tokens"], results["loss"])
    assert still["a"] == pytest.approx((fit["a"], fit["a"]))
    # End to end: a rerun of only the first budget's runs is enough.
    write_csv(study, tmp_path / "study.csv")
    write_csv([r for r in rerun if r["flops_budget"] == min(x["flops_budget"] for x in rerun)],
              tmp_path / "rerun.csv")
    assert seeds.main([f"--results={tmp_path / 'study.csv'}", f"--rerun={tmp_path / 'rerun.csv'}",
                       "--samples=50", f"--out={tmp_path / 'seeds.txt'}",
                       f"--plot={tmp_path / 'seeds.png'}"]) == 0
    printed = capsys.readouterr().out
    assert "from 7 pairs" in printed
    assert (tmp_path / "seeds.txt").read_text().strip() in printed
    assert (tmp_path / "seeds.png").stat().st_size > 10000


def test_a_rerun_sharing_no_point_is_a_one_line_error(tmp_path, capsys):
    study = synthetic_study(TRUE, noise=0.0)
    write_csv(study, tmp_path / "study.csv")
    write_csv([{**r, "tokens": r["tokens"] * 2} for r in study], tmp_path / "other.csv")
    assert seeds.main([f"--results={tmp_path / 'study.csv'}",
                       f"--rerun={tmp_path / 'other.csv'}"]) == 2
    assert capsys.readouterr().err.startswith("error: --rerun: 0 of its runs match")


def test_merged_seeds_fit_as_their_mean_and_resample_both(tmp_path, capsys):
    """Both seeds' runs in one table: each profile's parabola is the one through the seeds'
    mean losses (least squares with two runs per size), and lmjax-scaling reads them all."""
    from lmjax.study import analysis
    exact = synthetic_study(TRUE, noise=0.0)
    study, rerun = (with_additive_noise(exact, 0.02, s) for s in (3, 4))
    write_csv(study, tmp_path / "study.csv")
    write_csv(rerun, tmp_path / "rerun.csv")
    assert seeds.main([f"--results={tmp_path / 'study.csv'}", f"--rerun={tmp_path / 'rerun.csv'}",
                       "--samples=20", f"--merged={tmp_path / 'both'}"]) == 0
    assert f"{2 * len(exact)} runs of both seeds" in capsys.readouterr().out
    merged = analysis.read_results(str(tmp_path / "both" / "results.csv"))
    assert len(merged["loss"]) == 2 * len(exact)
    pooled = isoflop.fit(merged["budget"], merged["params"], merged["tokens"], merged["loss"])
    mean = as_results([{**a, "eval_loss": (a["eval_loss"] + b["eval_loss"]) / 2}
                       for a, b in zip(study, rerun)])
    averaged = isoflop.fit(mean["budget"], mean["params"], mean["tokens"], mean["loss"])
    assert pooled["a"] == pytest.approx(averaged["a"], rel=1e-9)
    for p, q in zip(pooled["profiles"], averaged["profiles"]):
        assert p["num_runs"] == 2 * q["num_runs"] and p["n_opt"] == pytest.approx(q["n_opt"])
    # The report's loss table gives each cell the mean of its two runs.
    table = analysis.loss_table(merged)
    assert f"{mean['loss'][0]:.4f} @ D={mean['tokens'][0]:.2g} x2" in table
    # The merged table may not overwrite an input.
    assert seeds.main([f"--results={tmp_path / 'both' / 'results.csv'}",
                       f"--rerun={tmp_path / 'rerun.csv'}", f"--merged={tmp_path / 'both'}"]) == 2
    assert "holds an input results.csv" in capsys.readouterr().err
