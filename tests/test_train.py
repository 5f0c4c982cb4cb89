"""The real train step and the training command end to end.

Fast: the jitted train step on a fixed batch; lmjax-train -> resume -> lmjax-sample in this process.
Slow: the same through real subprocesses, and the default experiment's published eval loss.
"""
import glob
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from lmjax.train import loop as train_lib, step as step_lib
from lmjax.main import sample_main, train_main
from lmjax.train.optim import make_schedule as schedule
from tests import helpers

METRIC_KEYS = {"step", "train_loss", "learning_rate", "grad_norm", "tokens_per_sec", "mfu"}
SMOKE_STEPS = 20
SMOKE_OVERRIDES = [
    "--config.model.num_layers=1", "--config.model.d_model=32", "--config.model.num_heads=2",
    "--config.model.d_ff=64", "--config.model.max_seq_len=32", "--config.train.seq_len=32",
    "--config.train.batch_size=8", f"--config.train.steps={SMOKE_STEPS}",
    "--config.train.eval_every=10", "--config.train.eval_steps=2", "--config.train.log_every=5",
    "--config.train.checkpoint_every=10", "--config.train.sample_tokens=0",
    "--config.train.progress=False", "--config.optim.warmup_steps=5",
    "--config.metrics.peak_flops_per_device=1e12",  # skips measuring the CPU's matmul peak
]


@pytest.fixture(scope="module")
def parts():
    # Weights carried in every batch so both tests below share one compiled step.
    return helpers.TrainParts(helpers.tiny_config({"optim.lr": 1e-2, "optim.warmup_steps": 2,
                                                   "optim.schedule": "cosine",
                                                   "train.steps": 12}))


def weighted(batch, weights=None):
    return {**batch, "weights": np.ones_like(batch["targets"], np.float32)
            if weights is None else weights}


def test_train_step_lowers_the_loss_on_a_fixed_batch(parts):
    cfg = parts.cfg
    batch = weighted(helpers.random_tokens(cfg, seed=7))
    state = parts.init()  # N(0, 0.02²) weights; the CLI test below covers model.init
    losses, lrs = [], []
    for _ in range(cfg.train.steps):
        state, metrics = parts.step(state, batch)
        assert bool(metrics["finite"]) and float(metrics["grad_norm"]) > 0
        losses.append(float(metrics["train_loss"]))
        lrs.append(float(metrics["learning_rate"]))
    assert int(state.step) == cfg.train.steps
    # Fresh weights (std 0.02) predict uniformly: the first loss is ln(vocab).
    assert losses[0] == pytest.approx(math.log(cfg.model.vocab_size), abs=0.05)
    assert losses[-1] < losses[0] - 0.7  # 4.16 -> ~3.0 in 12 steps
    assert all(b < a for a, b in zip(losses[2:], losses[3:]))  # steady descent after warmup
    lr_at = schedule(cfg.optim, cfg.train.steps)
    np.testing.assert_allclose(lrs, [float(lr_at(s)) for s in range(cfg.train.steps)], rtol=1e-5)


def test_the_init_compiled_for_compile_time_gives_the_same_state(parts):
    import flax.linen as nn
    from lmjax.train import state as state_lib
    built, cfg = parts.built, parts.cfg

    def init(key):  # the same init under XLA's default options
        p = nn.meta.unbox(built.model.init(key, state_lib.dummy_tokens(cfg))["params"])
        return state_lib.TrainState(step=np.int32(0), params=p, opt_state=built.tx.init(p))

    with built.context():
        expected = jax.jit(init, out_shardings=built.state_shardings)(jax.random.key(cfg.seed))
        state = built.init_state()
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_non_finite_step_is_not_applied(parts):
    batch = helpers.random_tokens(parts.cfg, seed=8)
    state = parts.init()
    before = jax.device_get(state.params)
    # No counted token: loss 0/0 = NaN.
    state, metrics = parts.step(state, weighted(batch, np.zeros_like(batch["targets"],
                                                                    np.float32)))
    assert not bool(metrics["finite"])
    assert int(state.step) == 1
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), before)


def test_model_inputs_pass_segments_only_when_masking_documents():
    batch = {"inputs": 1, "positions": 2, "segment_ids": 3}
    assert step_lib.model_inputs(batch, True) == (1, 2, 3)
    assert step_lib.model_inputs(batch, False) == (1, None, None)
    assert step_lib.model_inputs({"inputs": 1}, True) == (1, None, None)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def check_finished_workdir(workdir):
    records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    train_records = [r for r in records if "train_loss" in r]
    eval_records = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in train_records] == [5, 10, 15, 20]
    assert [r["step"] for r in eval_records] == [10, 20]
    for r in train_records:
        assert METRIC_KEYS <= set(r), set(r)
        assert all(math.isfinite(r[k]) for k in METRIC_KEYS)
        assert 0 < r["mfu"] < 1 and r["tokens_per_sec"] > 0
    assert train_records[-1]["train_loss"] < train_records[0]["train_loss"]
    assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
    with open(os.path.join(workdir, "loss.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["step"] == SMOKE_STEPS
    assert summary["eval_loss"] == pytest.approx(eval_records[-1]["eval_loss"])
    assert summary["train_loss"] == pytest.approx(train_records[-1]["train_loss"])
    assert str(SMOKE_STEPS) in os.listdir(os.path.join(workdir, "checkpoints"))
    return records, summary


def test_cli_trains_resumes_and_samples_in_process(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    args = [f"--config={helpers.EXPERIMENT}", f"--workdir={workdir}", *SMOKE_OVERRIDES]
    train_main(args)
    first = capsys.readouterr().out
    assert "resumed from step" not in first
    records, summary = check_finished_workdir(workdir)
    outputs = {name: open(os.path.join(workdir, name), "rb").read()
               for name in ("summary.json", "loss.png")}

    train_main(args)  # steps already reached: resumes and does nothing more
    second = capsys.readouterr().out
    assert f"resumed from step {SMOKE_STEPS}" in second
    assert read_jsonl(os.path.join(workdir, "metrics.jsonl")) == records
    for name, content in outputs.items():
        assert open(os.path.join(workdir, name), "rb").read() == content, name
    check_finished_workdir(workdir)

    # Stopped after its last checkpoint but before its summary and plot: a rerun writes them
    # with the losses the run logged, and trains nothing.
    for name in outputs:
        os.remove(os.path.join(workdir, name))
    train_main(args)
    assert "stopped before its summary, which is written now" in capsys.readouterr().out
    assert read_jsonl(os.path.join(workdir, "metrics.jsonl")) == records
    _, rebuilt = check_finished_workdir(workdir)
    for key in ("step", "train_loss", "eval_loss", "tokens", "num_params"):
        assert rebuilt[key] == summary[key], key
    # Stopped before even its last eval was logged: the eval runs again on the saved weights.
    os.remove(os.path.join(workdir, "summary.json"))
    kept = [r for r in records if not ("eval_loss" in r and r["step"] == SMOKE_STEPS)]
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    train_main(args)
    capsys.readouterr()
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f)["eval_loss"] == pytest.approx(summary["eval_loss"], abs=1e-6)

    sample_main([f"--workdir={workdir}", "--prompt=ROMEO:", "--max_new_tokens=20"])
    text = capsys.readouterr().out.rstrip("\n")
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 20


def test_the_closing_sample_runs_after_training_lets_go_of_its_state(tmp_path, monkeypatch,
                                                                    capsys):
    finished = train_lib.finish
    seen = {}

    def spy(trainer, summary):
        seen["eval_executables"] = trainer.eval_step._cache_size()
        finished(trainer, summary)
        seen["trainer"] = trainer

    monkeypatch.setattr(train_lib, "finish", spy)
    sampling = [a for a in SMOKE_OVERRIDES if "sample_tokens" not in a]
    train_main([f"--config={helpers.EXPERIMENT}", f"--workdir={tmp_path / 'run'}", *sampling,
                "--config.train.sample_tokens=12", "--config.train.steps=10"])
    trainer = seen["trainer"]
    assert seen["eval_executables"] > 0  # the evals compiled one, which finish() dropped
    assert trainer.eval_step._cache_size() == 0 and trainer.train_step._cache_size() == 0
    assert trainer.state.opt_state is None and trainer.state.params is not None
    sample = open(tmp_path / "run" / "sample.txt").read()
    assert len(sample) >= 12 and sample in capsys.readouterr().out


@pytest.mark.slow
def test_cli_end_to_end_in_subprocesses(tmp_path):
    workdir = str(tmp_path / "run")
    args = [f"--config={helpers.EXPERIMENT}", f"--workdir={workdir}", *SMOKE_OVERRIDES]
    first = helpers.run_module("lmjax.train", args)
    assert first.returncode == 0, first.stderr[-3000:]
    records, _ = check_finished_workdir(workdir)
    second = helpers.run_module("lmjax.train", args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resumed from step {SMOKE_STEPS}" in second.stdout
    assert read_jsonl(os.path.join(workdir, "metrics.jsonl")) == records
    sample = subprocess.run([os.path.join(os.path.dirname(sys.executable), "lmjax-sample"),
                             f"--workdir={workdir}", "--prompt=ROMEO:", "--max_new_tokens=20"],
                            cwd=helpers.REPO, env=helpers.cli_env(), capture_output=True,
                            text=True, timeout=300)
    assert sample.returncode == 0, sample.stderr[-3000:]
    text = sample.stdout.rstrip("\n")
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 20


@pytest.mark.slow
def test_default_experiment_reaches_published_eval_loss(tmp_path):
    """shakespeare_char (baby), 2000 steps: the docstring promises eval loss <= 1.89."""
    workdir = str(tmp_path / "baby")
    proc = helpers.run_module("lmjax.train", [
        f"--config={helpers.EXPERIMENT}", f"--workdir={workdir}", "--config.train.progress=False",
        "--config.train.sample_tokens=0"], timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["step"] == 2000
    assert summary["eval_loss"] <= 1.89, summary
