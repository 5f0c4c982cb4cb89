"""WSD IsoFLOP studies: branches land on their FLOP budgets, stable segments chain, branch points
wait for their sources, and the chinchilla_tiny :quick study runs end to end (slow)."""
import csv
import json
import os
import subprocess
import sys
import tarfile

import pytest

from lmjax.study import runner, sweep, wsd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(REPO, "experiments", "chinchilla_tiny.py")
SIZES = {"a": (2e5, {"model.d_model": 32}), "b": (4e5, {"model.d_model": 48}),
         "c": (8e5, {"model.d_model": 64})}
BUDGETS = {1e12: ["a", "b", "c"], 4e12: ["a", "b", "c"], 1.6e13: ["b", "c"]}


def _load_study():
    import importlib.util
    spec = importlib.util.spec_from_file_location("chinchilla_tiny", STUDY)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


def test_plan_puts_every_branch_on_its_budget_and_chains_the_stable_phase():
    points = wsd.plan(SIZES, BUDGETS, tokens_per_step=1024, cooldown=0.2)
    branches = [p for p in points if p["role"] == "cooldown"]
    assert len(branches) == 8
    assert [p["budget"] for p in points] == sorted(p["budget"] for p in points)
    for p in branches:
        n = SIZES[p["size"]][0]
        tokens = p["steps"] * 1024
        assert abs(6 * n * tokens - p["budget"]) <= 6 * n * 1024 / 2  # within half a step
        assert p["start"] == int(0.8 * p["steps"])
        source = points[p["source"]]
        assert source["role"] == "stable" and source["size"] == p["size"]
        assert source["steps"] == p["start"]  # the segment ends where the branch starts
    for size in SIZES:
        segments = [p for p in points if p["role"] == "stable" and p["size"] == size]
        assert segments[0]["start"] == 0 and segments[0]["source"] is None
        for before, after in zip(segments, segments[1:]):
            assert after["start"] == before["steps"] and points[after["source"]] is before


def test_study_sizes_count_the_models_parameters():
    from lmjax.config import apply_overrides
    from lmjax.model import build_model
    from lmjax.train import state
    study = _load_study()
    for name in ("s0", "s4", "s8"):  # 2, 3 and 5 layers
        cfg = study.get_config()
        apply_overrides(cfg, study.size_overrides(name))
        params = state.strip_boxes(state.abstract_params(build_model(cfg.model), cfg))
        total = state.count_params(params)
        tables = params["embed"]["embedding"].size + params["pos_embed"].size
        assert study.num_params(name) == (total, total - tables)


@pytest.mark.parametrize("variant", ["lr_horizon", "lr_horizon_top"])
def test_rate_checks_rerun_the_study_branches_of_their_sizes_at_their_rates(tmp_path, variant):
    study = _load_study()
    sizes, budgets, rates = study.HORIZON_CHECKS[variant]
    key = lambda p: (p["size"], p["steps"], p["start"], p["budget"])
    branches = lambda points: sorted((key(p) for p in points if p["role"] == "cooldown"))
    base = [p for p in study.study_points() if p["size"] in sizes and p["budget"] in budgets]
    checked = study.study_points(variant)
    for lr in rates:
        block = [p for p in checked if p["overrides"]["optim.lr"] == lr]
        assert branches(block) == branches(base)  # the same branches, at another rate
        for p in block:  # and the warmup and beta2 the rate was chosen with
            assert p["overrides"] == {**study.size_overrides(p["size"]), "optim.lr": lr,
                                      "optim.warmup_steps": study.CHECKS_WARMUP,
                                      "optim.b2": study.CHECKS_B2}
            if p["source"] is not None:  # continues a segment of its own size and rate
                source = checked[p["source"]]
                assert source["size"] == p["size"] and source["overrides"] == p["overrides"]
                assert source["role"] == "stable" and source["steps"] == p["start"]
            else:
                assert p["role"] == "stable" and p["start"] == 0
    points = sweep.plan(f"{STUDY}:{variant}", str(tmp_path), {}, num_devices=1,
                        check_data=False)
    assert len(points) == len(checked) and all(p.overrides["optim.lr"] in rates
                                               for p in points)


def test_study_points_name_their_warmup_and_beta2_and_the_lr_sweep_keeps_its_own():
    study = _load_study()
    assert study.get_config().optim.warmup_steps == study.WARMUP
    assert study.get_config().optim.b2 == study.B2
    assert all(p["overrides"]["optim.warmup_steps"] == study.WARMUP
               and p["overrides"]["optim.b2"] == study.B2 for p in study.study_points())
    lr = study.get_config("lr").optim
    assert lr.warmup_steps == study.CHECKS_WARMUP != study.WARMUP
    assert lr.b2 == study.CHECKS_B2 != study.B2


@pytest.mark.parametrize("variant", ["seed1_b2_099", "b2_095", "seed1", "warmup100",
                                     "warmup100_seed1", "warmup20"])
def test_reruns_repeat_their_budgets_with_their_settings(tmp_path, variant):
    study = _load_study()
    changed, budgets = study.RERUNS[variant]
    expected = [p for p in study.study_points() if p["budget"] in budgets]
    checked = study.study_points(variant)
    # The study's own points of those budgets, in order, each with the settings changed.
    key = lambda p: (p["role"], p["size"], p["steps"], p["start"], p["budget"])
    assert [key(p) for p in checked] == [key(p) for p in expected]
    assert [p["overrides"] for p in checked] == [{**p["overrides"], **changed}
                                                 for p in expected]
    points = sweep.plan(f"{STUDY}:{variant}", str(tmp_path), {}, num_devices=1,
                        check_data=False)
    assert len(points) == len(checked)
    assert all(p.overrides[k] == v for p in points for k, v in changed.items())
    # A rerun never shares a sweep name with the study's own points.
    study_names = {p.name for p in sweep.plan(STUDY, str(tmp_path), {}, num_devices=1,
                                              check_data=False)}
    assert not study_names & {p.name for p in points}


def test_sweep_points_name_their_sources_and_wait_for_them(tmp_path):
    points = sweep.plan(STUDY + ":quick", str(tmp_path), {}, num_devices=1, check_data=False)
    names = [p.name for p in points]
    waiting = [p for p in points if p.after]
    assert len(waiting) == len(points) - 3  # all but the 3 sizes' first stable segments
    for p in waiting:
        assert names.index(p.after) < names.index(p.name)
        assert p.overrides["init_from"].startswith("checkpoint:{root}/" + p.after + "@")
    command = sweep.train_command(STUDY + ":quick", waiting[0], {})
    assert f"--config.init_from=checkpoint:{tmp_path}/{waiting[0].after}@" in " ".join(command)

    source, branch, other = (runner.Point(n, {}, str(tmp_path / n)) for n in "sbo")
    branch.after = "s"
    by_name = {p.name: p for p in (source, branch, other)}
    queue = [branch, other]
    source.status = "running"
    assert runner._next_ready(queue, by_name, waiting=True) is other
    assert runner._next_ready(queue, by_name, waiting=True) is None  # branch waits
    source.status = "failed"
    failed = runner._next_ready(queue, by_name, waiting=True)
    assert failed is branch and failed.status == "failed" and "s did not finish" in failed.error


@pytest.mark.slow
def test_quick_study_runs_end_to_end(tmp_path):
    """Corpus, tokenizer, 12 runs through lmjax-sweep, results.csv, both fits and figures."""
    for archive in ("gutenberg_books.tar.xz", "gutenberg_books_more.tar.xz"):  # all 76 books
        with tarfile.open(os.path.join(REPO, "experiments", "data", archive)) as tar:
            tar.extractall(tmp_path / "data", filter="data")
    env = {**os.environ, "PYTHONPATH": REPO}

    def run(*args):
        result = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    run("lmjax.data.prepare", "--input=data/gutenberg/train", "--valid_files=data/gutenberg/valid",
        "--output=data/gutenberg_sp4k", "--tokenizer=sentencepiece", "--vocab_size=4096",
        "--no_progress")
    root, out = str(tmp_path / "runs"), str(tmp_path / "results")
    run("lmjax.study.sweep", f"--config={STUDY}:quick", f"--workdir={root}")
    run("lmjax.study.wsd", f"--config={STUDY}:quick", f"--workdir={root}", f"--out={out}")
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and all(r["status"] == "done" for r in rows)
    fitted = run("lmjax.study.scaling", f"--results={out}/results.csv", "--samples=20")
    assert "Approach 2" in fitted.stdout and "Approach 3" in fitted.stdout
    fits = json.load(open(os.path.join(out, "fits.json")))
    assert fits["num_runs"] == 6  # the decayed branches; stable segments are not fitted
    for name in ("isoflop.png", "parametric.png", "wsd_curves.png"):
        assert os.path.getsize(os.path.join(out, name)) > 20000
