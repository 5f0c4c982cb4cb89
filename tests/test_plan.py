"""lmjax-plan: targets, the compiled step's memory against lmjax-train's own, TPU targets,
errors."""
import json
import math
import os
import re
import subprocess
import sys

import pytest

from tests import helpers

LLAMA = os.path.join(helpers.REPO, "experiments", "llama_1b.py")
# Llama 3 architecture (GQA, SwiGLU, RoPE, RMSNorm, bf16 compute) at test size, on the shipped
# text so lmjax-train can run it.
REDUCED_LLAMA = [
    "--config.model.num_layers=2", "--config.model.d_model=64", "--config.model.num_heads=4",
    "--config.model.num_kv_heads=2", "--config.model.head_dim=16", "--config.model.d_ff=128",
    "--config.model.vocab_size=256", "--config.model.max_seq_len=32",
    "--config.train.seq_len=32", "--config.train.batch_size=8",
    f"--config.data.path={helpers.SHAKESPEARE}", "--config.data.tokenizer=char",
]
ONE_STEP = ["--config.train.steps=1", "--config.train.eval_steps=0",
            "--config.train.sample_tokens=0", "--config.train.progress=False",
            "--config.metrics.peak_flops_per_device=1e12"]
MEMORY_LINE = re.compile(r"compiled memory per device: ([\d,]+) bytes total = arguments ([\d,]+) "
                         r"\(params ([\d,]+), optimizer ([\d,]+), batch ([\d,]+)\) \+ temporaries "
                         r"([\d,]+) \+ unaliased outputs ([\d,]+)")
FIELDS = ("total", "arguments", "params", "optimizer", "batch", "temporaries", "outputs")


def plan_json(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def training_memory(tmp_path, config, overrides) -> dict:
    """The per-device memory lmjax-train reports from the executable it runs, on 8 devices."""
    proc = helpers.run_module("lmjax.train", [
        f"--config={config}", f"--workdir={tmp_path / 'run'}", *overrides, *ONE_STEP],
        XLA_FLAGS="--xla_force_host_platform_device_count=8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = MEMORY_LINE.search(proc.stdout)
    assert found, proc.stdout[-2000:]
    return {k: int(v.replace(",", "")) for k, v in zip(FIELDS, found.groups())}


def check_memory_matches_training(tmp_path, config, overrides):
    trained = training_memory(tmp_path, config, overrides)
    proc = helpers.run_module("lmjax.plan", [f"--config={config}", "--target=cpu:8", *overrides])
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned = plan_json(proc)["memory"]
    assert {k: planned[k] for k in FIELDS} == trained
    assert trained["temporaries"] > 0 and trained["params"] > 0
    return planned


@pytest.mark.slow
def test_reduced_llama_tensor2_fsdp4_memory_is_the_training_runs(tmp_path):
    check_memory_matches_training(tmp_path, LLAMA, REDUCED_LLAMA + [
        "--config.mesh.data=1", "--config.mesh.fsdp=4", "--config.mesh.tensor=2"])


SMALLEST_LLAMA = [
    "--config.model.num_layers=1", "--config.model.d_model=32", "--config.model.num_heads=4",
    "--config.model.num_kv_heads=2", "--config.model.head_dim=8", "--config.model.d_ff=64",
    "--config.model.vocab_size=128", "--config.model.max_seq_len=16",
    "--config.train.seq_len=16", "--config.train.batch_size=8",
    f"--config.data.path={helpers.SHAKESPEARE}", "--config.data.tokenizer=char",
    "--config.mesh.data=1", "--config.mesh.fsdp=4", "--config.mesh.tensor=2"]


@pytest.mark.slow  # ~50 CPU-seconds: training and planning, two compiles, one process
def test_memory_is_the_training_runs_in_one_process(tmp_path):
    """lmjax-train's report and the planner's, in one 8-device process to share the start-up."""
    code = f"""
import contextlib, io, json
from lmjax.main import train_main
from lmjax.plan import estimate, main as plan_main, planner
out = io.StringIO()
with contextlib.redirect_stdout(out):
    train_main({[f"--config={LLAMA}", f"--workdir={tmp_path / 'run'}", *SMALLEST_LLAMA,
                 *ONE_STEP]!r})
args, overrides = plan_main.parse_args({[f"--config={LLAMA}", "--target=cpu:8",
                                         *SMALLEST_LLAMA]!r})
cfg, target = plan_main.load(args, overrides)
facts = estimate.Facts("cpu", 2 ** 34, 1e10, 1e10, "fixed for this test")
print(out.getvalue())
print(json.dumps(planner.plan(cfg, target, overrides, facts)["memory"]))
"""
    proc = helpers.run_script(code, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = MEMORY_LINE.search(proc.stdout)
    assert trained, proc.stdout[-2000:]
    trained = {k: int(v.replace(",", "")) for k, v in zip(FIELDS, trained.groups())}
    planned = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {k: planned[k] for k in FIELDS} == trained
    assert trained["temporaries"] > 0 and trained["params"] > 0


@pytest.mark.slow
def test_reduced_llama_fsdp8_memory_is_the_training_runs(tmp_path):
    check_memory_matches_training(tmp_path, LLAMA, REDUCED_LLAMA + [
        "--config.mesh.data=1", "--config.mesh.fsdp=8", "--config.mesh.tensor=1"])


@pytest.mark.slow
def test_shakespeare_default_memory_is_the_training_runs(tmp_path):
    # The default experiment's batch of 12 does not split over 8 devices; 16 does.
    check_memory_matches_training(tmp_path, helpers.EXPERIMENT, ["--config.train.batch_size=16"])


def test_targets_parse_to_slice_shapes():
    from lmjax.plan.target import parse
    cases = {"v5e-256": ("v5e:16x16", 256), "v5e-8": ("v5e:2x4", 8),
             "v5p-128": ("v5p:4x4x4", 64), "v5p-256": ("v5p:4x4x8", 128),
             "v4-8": ("v4:2x2x1", 4), "v6e-64": ("v6e:8x8", 64),
             "v5litepod-16": ("v5e:4x4", 16), "v5e:8x16": ("v5e:8x16", 128),
             "v5p:4x4x12": ("v5p:4x4x12", 192), "cpu:8": ("", 8)}
    for spec, (topology, devices) in cases.items():
        target = parse(spec)
        assert (target.topology, target.num_devices) == (topology, devices), spec
    assert parse("v5p-128", num_slices=2).num_devices == 128


# A model whose parameters, Adam moments and batch per device are known in closed form.
D, F, L, V, T, B = 128, 256, 1, 256, 64, 16
TPU_MODEL = [f"--config.model.num_layers={L}", f"--config.model.d_model={D}",
             "--config.model.num_heads=4", f"--config.model.d_ff={F}",
             f"--config.model.vocab_size={V}", f"--config.model.max_seq_len={T}",
             f"--config.train.seq_len={T}", f"--config.train.batch_size={B}",
             "--config.model.scan_layers=False", "--config.model.use_bias=False",
             "--config.model.remat_policy=none", "--config.model.attention=einsum",
             "--config.mesh.data=1", "--config.mesh.fsdp=8", "--config.model.positions=rope"]


def test_tpu_target_compiles_with_no_tpu_and_counts_match_closed_forms():
    proc = helpers.run_module("lmjax.plan", [f"--config={helpers.EXPERIMENT}",
                                             "--target=v5e-8", *TPU_MODEL])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = plan_json(proc)
    assert rec["device"] == "TPU v5e" and rec["devices"] == 8 and rec["fits"]
    # Tied embedding and per layer q/k/v/o + MLP in/out kernels, split 8 ways along d_model by
    # fsdp; two LayerNorm scales per layer and the final one, which stay whole on every chip.
    matrices = V * D + L * (4 * D * D + 2 * D * F)
    scales = (2 * L + 1) * D
    params = matrices * 4 // 8 + scales * 4
    mem = rec["memory"]
    assert mem["params"] == params
    assert mem["optimizer"] == 2 * params + 2 * 4  # Adam's mu and nu; two int32 counters
    assert mem["batch"] == 4 * (B // 8) * T * 4  # four int32 fields, B/8 rows each
    # XLA's argument bytes are its own count of the same buffers (+ the int32 step), which
    # TPU tiles pad: a 128-float scale takes a whole (8, 128) tile.
    assert mem["arguments"] >= mem["params"] + mem["optimizer"] + mem["batch"] + 4
    assert mem["total"] == mem["arguments"] + mem["temporaries"] + mem["outputs"]
    # The compiler's usable HBM, read from XLA, is below the 16 GiB data sheet.
    assert 15 * 2 ** 30 < rec["limit_bytes"] < rec["memory_bytes"] == 16 * 2 ** 30
    # 6N + 12LdT (N: every parameter but lookup tables; the tied embedding is the head)
    # against XLA's own FLOP count, which adds softmax, norms and the optimizer but no
    # recompute (remat none, no scan).
    formula = (6 * (matrices + scales) + 12 * L * D * T) * B * T / 8
    assert rec["formula_flops"] == pytest.approx(formula, rel=1e-6)
    assert 1.0 <= rec["xla_flops"] / formula < 1.3, rec["xla_flops"] / formula
    # The planner's own matmul count from the step's jaxpr: every weight 6 FLOPs a token, the
    # scores and values 12LdT; with no loop, nothing to scale.
    assert rec["matmul_flops"] == (6 * matrices + 12 * L * D * T) * B * T / 8
    assert rec["loop_scale"] == rec["byte_scale"] == 1.0 and rec["flops"] == rec["xla_flops"]
    assert rec["collective_bytes"] > 0 and rec["ici_s"] > 0  # fsdp gathers the weights
    assert rec["step_source"] == "cost model" and rec["step_s"] > 0
    assert 0 < rec["mfu"] < 1
    assert rec["tokens_per_s_per_chip"] == pytest.approx(B * T / 8 / rec["step_s"])


def test_tpu_target_that_cannot_fit_says_by_how_much_and_what_would():
    # Untied 262k x 8k f32 embeddings + Adam moments: 27 GB of state on each of 2 v5e chips.
    proc = helpers.run_module("lmjax.plan", [
        f"--config={helpers.EXPERIMENT}", "--target=v5e:1x2", "--config.model.num_layers=1",
        "--config.model.d_model=8192", "--config.model.num_heads=64", "--config.model.d_ff=64",
        "--config.model.vocab_size=262144", "--config.model.tie_embeddings=False",
        "--config.model.max_seq_len=64", "--config.train.seq_len=64",
        "--config.train.batch_size=2", "--config.mesh.data=1", "--config.mesh.fsdp=2"])
    assert proc.returncode == 1, proc.stderr[-3000:]
    rec = plan_json(proc)
    matrices = 2 * 262144 * 8192 + 4 * 8192 * 8192 + 2 * 8192 * 64  # embed, head, layer
    state = matrices * 4 * 3 / 2  # param + Adam's mu and nu in f32, split over two chips
    assert state < rec["memory"]["total"] < state * 1.01
    assert not rec["fits"] and rec["headroom_bytes"] < 0
    shortfall = -rec["headroom_bytes"] / 2 ** 30
    assert f"does not fit by {shortfall:.2f} GiB" in proc.stdout
    assert "shard them over at least" in rec["advice"]
    chips = int(re.search(r"at least (\d+) chips", rec["advice"]).group(1))
    state = rec["memory"]["params"] + rec["memory"]["optimizer"]
    assert chips >= math.ceil(2 * state / rec["limit_bytes"])


@pytest.mark.parametrize("args, message", [
    (["--target=v9-8"], "--target=v9-8: unknown target"),
    (["--target=v5e-12"], "--target=v5e-12: TPU v5e slices are named by chips"),
    (["--target=v5e-8", "--config.mesh.tensor=3"], "8 devices are not divisible"),
    (["--target=v5p-128", "--config.mesh.data=2", "--config.mesh.fsdp=8"], "64 devices"),
    (["--target=cpu:8", "--config.model.d_modle=3"], "unknown config field"),
    (["--target=cpu:8"], "train.batch_size=12: not divisible by mesh."),
])
def test_bad_input_is_one_line_before_any_compile(args, message, monkeypatch, capsys):
    from lmjax.plan import aot, main as plan_main
    monkeypatch.setattr(aot, "compile_step", lambda *a: pytest.fail("compiled"))
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
    with pytest.raises(SystemExit) as stop:
        plan_main.main([f"--config={helpers.EXPERIMENT}", *args])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_launcher_plan_refuses_a_job_that_cannot_fit_with_the_numbers(tmp_path):
    # Untied 262k x 16k embeddings: 26 GB of parameters and Adam moments per v5e chip of four.
    train = ["lmjax-train", f"--config={helpers.EXPERIMENT}", f"--workdir={tmp_path}",
             "--config.model.num_layers=1", "--config.model.d_model=16384",
             "--config.model.num_heads=128", "--config.model.d_ff=64",
             "--config.model.vocab_size=262144", "--config.model.tie_embeddings=False",
             "--config.train.batch_size=4", "--config.mesh.data=1", "--config.mesh.fsdp=4"]
    proc = subprocess.run(
        [sys.executable, os.path.join(helpers.REPO, "launch", "tpu_vm.py"), "run", "--name=lm",
         "--zone=z", "--accelerator_type=v5litepod-4", "--plan", "--dry_run", "--", *train],
        cwd=helpers.REPO, env=helpers.cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1 and "gcloud" not in proc.stdout, proc.stdout
    found = re.search(r"refused: the train step needs ([\d.]+) GiB per chip of ([\d.]+) GiB and "
                      r"does not fit by ([\d.]+) GiB; to fit: .*shard them over at least 8 chips",
                      proc.stderr)
    assert found, proc.stderr
    need, have, short = map(float, found.groups())
    assert need > 24 and 15 < have < 16 and short == pytest.approx(need - have, abs=0.011)


@pytest.mark.slow
def test_search_ranks_layouts_and_prints_the_winner_as_overrides():
    proc = helpers.run_module("lmjax.plan", [
        f"--config={helpers.EXPERIMENT}", "--target=cpu:2", "--search", "--jobs=2",
        "--config.model.num_layers=1", "--config.model.d_model=32", "--config.model.d_ff=64",
        "--config.model.max_seq_len=16", "--config.train.seq_len=16",
        "--config.train.batch_size=8"], timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = plan_json(proc)
    ranked = [r for r in rec["ranked"] if r["fits"]]
    assert len(ranked) >= 4
    assert [r["step_s"] for r in ranked] == sorted(r["step_s"] for r in ranked)
    assert rec["overrides"] == ranked[0]["overrides"] and "search took" in proc.stdout
    flags = " ".join(f"--config.{k}={v}" for k, v in rec["overrides"].items())
    assert f"best layout: {flags}" in proc.stdout


@pytest.mark.slow
def test_ranking_agrees_with_measured_step_times():
    """benchmarks/plan_ranking.py: Spearman rho of predicted vs measured over 5 layouts."""
    proc = subprocess.run([sys.executable, os.path.join(helpers.REPO, "benchmarks",
                                                        "plan_ranking.py"), "--rounds=7",
                           "--png=/dev/null"],
                          cwd=helpers.REPO, env=helpers.cli_env(), capture_output=True,
                          text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["rho"] >= 0.8, proc.stdout
