"""lmjax.study.rates: the same study points at several learning rates, matched and compared."""
import csv
import os

import pytest

from lmjax.study import rates

FIELDS = ("name", "role", "num_params", "tokens", "flops_budget", "eval_loss", "status")


def write_results(path, points):
    """points: (N, D, loss, role, status) rows of a study's results.csv."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for i, (n, d, loss, role, status) in enumerate(points):
            writer.writerow({"name": f"p{i}", "role": role, "num_params": n, "tokens": d,
                             "flops_budget": 6 * n * d, "eval_loss": loss, "status": status})
    return str(path)


def test_points_are_matched_across_rates_and_the_best_is_marked(tmp_path, capsys):
    low = write_results(tmp_path / "low.csv", [
        (1e5, 2e6, 4.90, "cooldown", "done"), (3e5, 6e6, 4.50, "cooldown", "done"),
        (3e5, 5e6, 4.70, "stable", "done")])  # a stable segment: never compared
    high = write_results(tmp_path / "high.csv", [
        (1e5, 2e6, 4.95, "cooldown", "done"), (3e5, 6e6, 4.40, "cooldown", "done"),
        (9e5, 6e6, 4.30, "cooldown", "done")])  # only this rate has it
    mid = write_results(tmp_path / "mid.csv", [
        (1e5, 2e6, 4.80, "cooldown", "done"), (3e5, 6e6, 4.45, "cooldown", "done"),
        (9e5, 6e6, 9.99, "cooldown", "missing")])
    out = tmp_path / "figs" / "rates.png"
    assert rates.main([f"--results=1e-3={low}", f"--results=4e-3={high}",
                       f"--results=2e-3={mid}", f"--out={out}"]) == 0
    printed = capsys.readouterr().out
    rows = rates.compare({r: rates.analysis.read_results(p)
                          for r, p in ((1e-3, low), (4e-3, high), (2e-3, mid))})
    assert [(row["params"], row["tokens"]) for row in rows] == [(1e5, 2e6), (3e5, 6e6)]
    assert list(rows[0]["loss"]) == [1e-3, 2e-3, 4e-3]  # in order of rate
    assert rows[0]["loss"] == {1e-3: 4.90, 2e-3: 4.80, 4e-3: 4.95}
    assert [row["best"] for row in rows] == [2e-3, 4e-3]
    assert "4.8000*" in printed and "4.4000*" in printed
    assert "best at 0.001: 0 of 2, 0.002: 1 of 2, 0.004: 1 of 2" in printed
    assert os.path.getsize(out) > 10000


@pytest.mark.parametrize("specs, message", [
    (["6e-3"], "give RATE=PATH"),
    (["fast=a.csv", "6e-3=b.csv"], "give RATE=PATH"),
    (["-1=a.csv", "6e-3=b.csv"], "give RATE=PATH"),
    (["6e-3=a.csv", "6e-3=b.csv"], "at least two different rates"),
])
def test_bad_results_flags_are_one_line_errors(tmp_path, capsys, specs, message):
    args = [f"--results={s}" for s in specs] + [f"--out={tmp_path / 'x.png'}"]
    assert rates.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --results") and message in err
    assert not (tmp_path / "x.png").exists()


def test_files_without_a_shared_point_are_refused(tmp_path, capsys):
    a = write_results(tmp_path / "a.csv", [(1e5, 2e6, 4.9, "cooldown", "done")])
    b = write_results(tmp_path / "b.csv", [(2e5, 2e6, 4.8, "cooldown", "done")])
    assert rates.main([f"--results=1e-3={a}", f"--results=2e-3={b}",
                       f"--out={tmp_path / 'x.png'}"]) == 2
    assert "share no (num_params, tokens) point" in capsys.readouterr().err
