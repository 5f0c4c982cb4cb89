"""lmjax.study.tuned: each FLOP budget's IsoFLOP profile taken from the rate that reaches the
lowest loss there, among the rates that ran all of its sizes."""
import csv

import numpy as np
import pytest

from lmjax.study import analysis, isoflop, tuned

FIELDS = ("name", "role", "num_params", "tokens", "flops_budget", "eval_loss", "status")
SIZES = (1e5, 2e5, 4e5)


def profile(budget, offset, center):
    """A budget's runs: a parabola in log N with its minimum at `center`, raised by offset."""
    return [(n, budget / (6 * n), offset + 4.0 + (np.log(n / center)) ** 2) for n in SIZES]


def write(directory, rate, points):
    directory.mkdir()
    with open(directory / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for i, (n, d, loss) in enumerate(points):
            writer.writerow({"name": f"{rate}-{i}", "role": "cooldown", "num_params": n,
                             "tokens": d, "flops_budget": f"{6 * n * d:.6g}",
                             "eval_loss": loss, "status": "done"})
    with open(directory / "curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("run", "eval_loss"))
        writer.writeheader()
        for i, (_, _, loss) in enumerate(points):
            writer.writerow({"run": f"{rate}-{i}", "eval_loss": loss + 1})
    return f"{rate}={directory / 'results.csv'}"


def test_each_budget_takes_the_rate_with_the_lowest_profile(tmp_path, capsys):
    small, large = 1e12, 1e13
    low = write(tmp_path / "low", "1e-3", profile(small, 0.0, 2e5) + profile(large, 0.10, 2e5))
    high = write(tmp_path / "high", "4e-3", profile(small, 0.05, 2e5)
                 + profile(large, 0.02, 2e5))
    # This rate is lowest at the large budget but lacks one of its sizes: not a candidate.
    partial = write(tmp_path / "partial", "8e-3", profile(small, 0.2, 2e5)
                    + profile(large, -1.0, 2e5)[:2])
    out = tmp_path / "tuned"
    assert tuned.main([f"--results={s}" for s in (low, high, partial)] + [f"--out={out}"]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "results.csv")))
    chosen = {round(float(r["flops_budget"]) / small): r["lr"] for r in rows}
    assert chosen == {1: "0.001", 10: "0.004"}
    assert len(rows) == 6 and {r["name"] for r in rows} == {
        "1e-3-0", "1e-3-1", "1e-3-2", "4e-3-3", "4e-3-4", "4e-3-5"}
    assert {r["run"] for r in csv.DictReader(open(out / "curves.csv"))} == {
        r["name"] for r in rows}
    # The parabola's minimum is the profile's loss: 4.0 + offset at the centre size.
    table = tuned.choose({rate: analysis.read_results(str(tmp_path / d / "results.csv"))
                          for rate, d in ((1e-3, "low"), (4e-3, "high"), (8e-3, "partial"))})
    assert table[1]["loss"] == {1e-3: pytest.approx(4.10), 4e-3: pytest.approx(4.02)}
    assert "4.0200*" in printed and (out / "tuning.txt").read_text().strip() in printed
    # The merged file refits like any study's.
    merged = analysis.read_results(str(out / "results.csv"))
    fit = isoflop.fit(merged["budget"], merged["params"], merged["tokens"], merged["loss"])
    assert [p["n_opt"] for p in fit["profiles"]] == [pytest.approx(2e5), pytest.approx(2e5)]


def test_profile_without_a_minimum_uses_its_lowest_run():
    assert tuned.profile_loss([1e5, 2e5, 4e5], [4.0, 4.1, 4.3]) == 4.0


def test_one_rate_is_refused_in_one_line(tmp_path, capsys):
    only = write(tmp_path / "only", "1e-3", profile(1e12, 0.0, 2e5))
    assert tuned.main([f"--results={only}", f"--out={tmp_path / 'o'}"]) == 2
    assert capsys.readouterr().err.startswith("error: --results")
    assert not (tmp_path / "o").exists()
