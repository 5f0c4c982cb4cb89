"""lmjax-sweep: expansion, validation before running, kill/resume, and a failing point."""
import csv
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lmjax import config as config_lib
from lmjax.study import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPERIMENT = textwrap.dedent("""
    import os
    import lmjax
    from lmjax.config import base_config

    def get_config(arg=None):
        c = base_config()
        c.model.update(num_layers=1, d_model=16, num_heads=2, d_ff=32, vocab_size=65,
                       max_seq_len=32)
        c.train.update(steps=120, batch_size=4, seq_len=32, eval_every=60, eval_steps=2,
                       log_every=20, checkpoint_every=20, sample_tokens=0, progress=False)
        c.optim.warmup_steps = 10
        c.metrics.update(tensorboard=False, peak_flops_per_device=1e11)
        c.data.path = os.path.join(os.path.dirname(lmjax.__file__), "data", "tinyshakespeare.txt")
        return c

    def sweep(add, arg=None):
        if arg == "broken":
            # Valid as a config, but the data has 65 characters: fails once the point runs.
            add(**{"model.vocab_size": 8})
            add(seed=2)
        elif arg == "unknown":
            add(seed=0)
            add(**{"model.d_modle": 32})
        else:
            for seed in (0, 1):
                for d_model in (16, 32):
                    add(seed=seed, model={"d_model": d_model})
""")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    path = tmp_path_factory.mktemp("exp") / "tiny_sweep.py"
    path.write_text(EXPERIMENT)
    return str(path)


@pytest.fixture(scope="module")
def child_env(tmp_path_factory):
    # Points of the same shapes compile once across the tests through jax's persistent cache.
    cache = tmp_path_factory.mktemp("jax_cache")
    return dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PLATFORMS="cpu")


def _listdir(path):
    return os.listdir(path) if os.path.isdir(path) else []


def run_sweep(*args, env, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "lmjax.study.sweep", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def read_rows(root):
    with open(os.path.join(root, "results.csv")) as f:
        return list(csv.DictReader(f))


def test_points_names_and_values_round_trip(experiment):
    points = sweep.collect(experiment)
    assert points == [{"seed": 0, "model.d_model": 16}, {"seed": 0, "model.d_model": 32},
                      {"seed": 1, "model.d_model": 16}, {"seed": 1, "model.d_model": 32}]
    assert sweep.point_names(points)[:2] == ["seed=0,d_model=16", "seed=0,d_model=32"]
    # Fields sharing a last part keep their full names; values go back through the parser.
    assert sweep.point_names([{"model.vocab_size": 8, "data.vocab_size": 9}]) == [
        "model.vocab_size=8,data.vocab_size=9"]
    for field, value in [("optim.lr", 3e-4), ("model.scan_layers", True), ("train.steps", 7),
                         ("model.norm", "rmsnorm"), ("mesh.rules", (("batch", "data"),))]:
        current = config_lib.base_config()
        for part in field.split("."):
            current = current[part]
        assert config_lib.parse_value(field, sweep.format_value(value), current) == value


def test_dry_run_and_only(experiment, child_env, tmp_path):
    root = tmp_path / "root"
    p = run_sweep(f"--config={experiment}", f"--workdir={root}", "--dry_run", "--num_devices=1",
                  "--only=seed=1,*", "--config.train.steps=7", env=child_env)
    out, err = p.communicate()
    assert p.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(f"-m lmjax.train --config={experiment} "
                             f"--workdir={root}/seed=1,d_model=16 --config.train.steps=7 "
                             "--config.seed=1 --config.model.d_model=16")
    assert not root.exists()


@pytest.mark.parametrize("arg, message", [
    ("", "has no sweep(add, arg=None) function; define one next to get_config that calls "
         "add(**overrides) once per point"),
    ("unknown", "error: sweep point 1 (d_modle=32): --config.model.d_modle: unknown config field "
                "'model.d_modle'; see lmjax/config.py for the fields that exist"),
])
def test_bad_sweeps_fail_before_anything_runs(arg, message, experiment, child_env, tmp_path):
    if not arg:
        no_sweep = tmp_path / "no_sweep.py"
        no_sweep.write_text("from lmjax.config import base_config\n"
                            "def get_config(arg=None):\n    return base_config()\n")
        spec = str(no_sweep)
    else:
        spec = f"{experiment}:{arg}"
    root = tmp_path / "root"
    p = run_sweep(f"--config={spec}", f"--workdir={root}", env=child_env)
    out, err = p.communicate()
    assert p.returncode == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert message in err
    assert not root.exists()


@pytest.mark.slow  # minutes on 2 cores; test_failing_point_... runs real points in CI
def test_killed_sweep_resumes_without_recomputing_finished_points(experiment, child_env,
                                                                  tmp_path):
    root = str(tmp_path / "root")
    args = (f"--config={experiment}", f"--workdir={root}", "--parallel=2", "--num_devices=1")
    first = run_sweep(*args, env=child_env, start_new_session=True)
    summaries = [os.path.join(root, name, "summary.json") for name in
                 sweep.point_names(sweep.collect(experiment))]
    deadline = time.time() + 240
    while time.time() < deadline and not any(os.path.exists(s) for s in summaries):
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    # A hard kill of the sweep and its children, as a lost machine would do.
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    finished = {s: os.stat(s).st_mtime_ns for s in summaries if os.path.exists(s)}
    assert 1 <= len(finished) < 4
    # Points cut off after a checkpoint (orbax renames a step's directory to its number when
    # the step is complete).
    interrupted = [os.path.basename(os.path.dirname(s)) for s in summaries
                   if s not in finished and any(
                       n.isdigit() for n in _listdir(os.path.join(os.path.dirname(s),
                                                                  "checkpoints")))]

    second = run_sweep(*args, env=child_env)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert f"{len(finished)} of 4 points already finished, skipping them" in out
    for summary, mtime in finished.items():
        assert os.stat(summary).st_mtime_ns == mtime  # not recomputed
    rows = read_rows(root)
    assert [(r["seed"], r["model.d_model"], r["status"]) for r in rows] == [
        ("0", "16", "done"), ("0", "32", "done"), ("1", "16", "done"), ("1", "32", "done")]
    for row in rows:
        assert row["step"] == "120" and row["tokens"] == str(120 * 4 * 32)
        assert 0 < float(row["eval_loss"]) < 4.2 and float(row["train_loss"]) > 0
    for name in ("results.png", "curves.png"):
        assert os.path.getsize(os.path.join(root, name)) > 1000
    # A point that had saved a checkpoint continued from it.
    for name in interrupted:
        with open(os.path.join(root, "logs", name + ".log")) as f:
            assert "resumed from step" in f.read(), name


def test_failing_point_is_reported_and_the_others_finish(experiment, child_env, tmp_path):
    root = str(tmp_path / "root")
    p = run_sweep(f"--config={experiment}:broken", f"--workdir={root}", "--parallel=2",
                  "--num_devices=1", env=child_env)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 1
    rows = {r["name"]: r for r in read_rows(root)}
    assert rows["seed=2"]["status"] == "done"
    broken = rows["vocab_size=8"]
    assert broken["status"] == "failed"
    assert broken["error"].startswith("exit 2: error: model.vocab_size=8")
    assert f"vocab_size=8: {broken['error']}" in err
