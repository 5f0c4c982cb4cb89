"""lmjax-scaling: the Chinchilla fit recovers known exponents; lmjax-plot draws runs' curves."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lmjax.study import plot, scaling

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRUE = {"E": 1.8, "A": 60.0, "B": 250.0, "alpha": 0.30, "beta": 0.36}


def synthetic_root(root, rng, noise=0.003):
    """A sweep ROOT whose runs' losses follow L(N, D) times log-normal noise: 6 sizes x 4
    budgets at CPU scale, as the scaling_tiny study produces."""
    params = np.repeat(np.geomspace(2e4, 2e6, 6), 4)
    tokens = np.tile(np.geomspace(3e5, 1e7, 4), 6)
    losses = scaling.predict(TRUE, params, tokens) * np.exp(rng.normal(0, noise, len(params)))
    for i, (n, d, loss) in enumerate(zip(params, tokens, losses)):
        os.makedirs(os.path.join(root, f"run{i}"))
        with open(os.path.join(root, f"run{i}", "summary.json"), "w") as f:
            json.dump({"step": 1, "train_loss": loss, "eval_loss": loss, "tokens": int(d),
                       "wall_time_s": 1.0, "num_params": int(n)}, f)
    return params, tokens, losses


def test_cli_fit_recovers_exponents_from_noisy_losses(tmp_path):
    root = str(tmp_path / "root")
    synthetic_root(root, np.random.default_rng(0))
    out = subprocess.run([sys.executable, "-m", "lmjax.study.scaling", f"--workdir={root}"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    fit = json.load(open(os.path.join(root, "scaling.json")))
    assert abs(fit["alpha"] - TRUE["alpha"]) < 0.02
    assert abs(fit["beta"] - TRUE["beta"]) < 0.02
    assert abs(fit["E"] - TRUE["E"]) < 0.1
    assert "alpha" in out.stdout and "0.34" in out.stdout  # the paper's value beside the fit
    assert "tokens per parameter" in out.stdout
    assert os.path.getsize(os.path.join(root, "scaling.png")) > 10000


@pytest.mark.slow  # CI's fast set checks the study's parametric fit in test_scaling_fits
def test_noise_free_fit_is_exact_and_optimum_matches_brute_force():
    rng = np.random.default_rng(1)
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 12))
    tokens = np.exp(rng.uniform(np.log(1e9), np.log(1e12), 12))
    fit = scaling.fit(params, tokens, scaling.predict(scaling.PAPER, params, tokens))
    for key, value in scaling.PAPER.items():
        assert fit[key] == pytest.approx(value, rel=1e-4)
    # Closed-form N_opt(C) against minimising L(N, C/6N) over a fine grid of N.
    flops = 1e21
    n_grid = np.geomspace(1e6, 1e12, 200001)
    best = n_grid[np.argmin(scaling.predict(scaling.PAPER, n_grid, flops / (6 * n_grid)))]
    n_opt, d_opt = scaling.compute_optimal(scaling.PAPER, flops)
    assert n_opt == pytest.approx(best, rel=1e-3)
    assert 6 * n_opt * d_opt == pytest.approx(flops)


def test_fewer_runs_than_parameters_is_one_line_exit_2(tmp_path):
    root = str(tmp_path / "root")
    synthetic_root(root, np.random.default_rng(0))
    for name in sorted(os.listdir(root))[4:]:
        os.remove(os.path.join(root, name, "summary.json"))
    out = subprocess.run([sys.executable, "-m", "lmjax.study.scaling", f"--workdir={root}"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: scaling fit: 4 finished runs; L(N, D) has 5 parameters and needs at least 6 "
        "runs; run more sweep points"]


def test_sweep_plot_draws_only_the_fields_its_points_vary(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plot, "_save", lambda fig, out: drawn.append(fig))
    source = "checkpoint__root__steps_2340_num_layers_2_d_model_16"
    rows = [{"lr": lr, "warmup": 200, "init_from": f"{source}_{i}", "eval_loss": 4 + lr}
            for i, lr in enumerate((1e-3, 3e-3, 1e-2))]
    rows.append({"lr": 0.1, "warmup": 200, "init_from": "x", "eval_loss": None})  # not done
    fields = ["lr", "warmup", "init_from", "seed", "b1", "b2"]
    assert plot.plot_sweep(rows, fields, str(tmp_path / "results.png"))
    shown = [ax for ax in drawn[0].axes if ax.get_visible()]
    # warmup and the fields no point sets are the same for every finished point.
    assert [ax.get_xlabel() for ax in shown] == ["lr", "init_from"]
    ticks = [t.get_text() for t in shown[1].get_xticklabels()]
    assert len(ticks) == 3 and all(len(t) <= 24 and t.endswith("...") for t in ticks)
    # One line per point: a legend would only repeat the other panel's values.
    assert all(ax.get_legend() is None for ax in shown)
    many = [{f"f{i}": j * (i + 1) for i in range(6)} | {"eval_loss": j} for j in range(3)]
    assert plot.plot_sweep(many, [f"f{i}" for i in range(6)], str(tmp_path / "many.png"))
    assert drawn[1].axes[0].get_subplotspec().get_gridspec().get_geometry() == (
        2, plot.MAX_SWEEP_COLUMNS)


def test_loss_plot_of_many_runs_names_each_run_once_and_briefly(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plot, "_save", lambda fig, out: drawn.append(fig))
    runs = []
    for i in range(plot.MANY_RUNS + 3):
        run = tmp_path / (f"steps={100 + i},num_layers=2,d_model=16,init_from=checkpoint__root__"
                          f"steps_{i}_num_layers_2")
        run.mkdir()
        (run / "metrics.jsonl").write_text("\n".join(
            json.dumps({"step": s, "train_loss": 4 / s, "eval_loss": 4.4 / s}) for s in (1, 2)))
        runs.append(str(run))
    plot.plot_runs(runs, str(tmp_path / "curves.png"))
    labels = [t.get_text() for t in drawn[0].axes[0].get_legend().get_texts()]
    assert len(labels) == len(runs) and len(set(labels)) == len(runs)
    assert all(len(label) <= plot.RUN_LABEL_WIDTH for label in labels)
    assert labels[0].startswith("steps=100,num_layers=2")
    plot.plot_runs(runs[:2], str(tmp_path / "two.png"))  # few runs: full names, train and eval
    labels = [t.get_text() for t in drawn[1].axes[0].get_legend().get_texts()]
    assert labels == [f"{os.path.basename(runs[0])} train", f"{os.path.basename(runs[0])} eval",
                      f"{os.path.basename(runs[1])} train", f"{os.path.basename(runs[1])} eval"]


def test_plot_overlays_runs_and_reads_resumed_metrics(tmp_path):
    runs = []
    for name, scale in (("a", 1.0), ("b", 0.9)):
        run = tmp_path / name
        run.mkdir()
        lines = [json.dumps({"step": s, "train_loss": scale * 4 / s}) for s in (1, 2, 3)]
        # A resume re-logs step 3; the run is still writing its last line.
        lines += [json.dumps({"step": 3, "train_loss": scale, "eval_loss": scale * 1.1}),
                  '{"step": 4, "train_']
        (run / "metrics.jsonl").write_text("\n".join(lines))
        runs.append(str(run))
    records = plot.read_metrics(runs[0])
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[-1] == {"step": 3, "train_loss": 1.0, "eval_loss": 1.1}
    out_png = tmp_path / "curves.png"
    out = subprocess.run([sys.executable, "-m", "lmjax.study.plot", *runs, f"--out={out_png}"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out_png.stat().st_size > 5000
    out = subprocess.run([sys.executable, "-m", "lmjax.study.plot", str(tmp_path / "missing")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing'}: no such workdir; pass directories written by "
        "lmjax-train"]
