"""Shared pieces of the checkpoint, resume, multi-process and export tests.

Every training scenario runs `python -m lmjax.main` in its own process, as a user would, with a
tiny model and per-step loss logging, so metrics.jsonl can be compared line by line.
"""
import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(REPO, "experiments", "shakespeare_char.py")

TINY = {
    "model.num_layers": 1, "model.d_model": 32, "model.num_heads": 2, "model.d_ff": 64,
    "model.max_seq_len": 16, "train.seq_len": 16, "train.batch_size": 8,
    "train.eval_steps": 0, "train.sample_tokens": 0, "train.log_every": 1,
    "train.progress": False, "metrics.tensorboard": False, "metrics.peak_flops_per_device": 1e12,
    "optim.warmup_steps": 2,
}


def env(devices: int = 1, **extra) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = REPO + os.pathsep + e.get("PYTHONPATH", "")
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    e["JAX_PLATFORMS"] = "cpu"
    e.update({k: str(v) for k, v in extra.items()})
    return e


def train_args(workdir: str, **overrides) -> list:
    values = {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}}
    return ["--config=" + EXPERIMENT, f"--workdir={workdir}",
            *[f"--config.{k}={v}" for k, v in values.items()]]


def train_command(workdir: str, **overrides) -> list:
    return [sys.executable, "-m", "lmjax.main", *train_args(workdir, **overrides)]


def run(command, devices: int = 1, timeout: float = 240, **extra_env):
    return subprocess.run(command, cwd=REPO, env=env(devices, **extra_env), capture_output=True,
                          text=True, timeout=timeout)


def train(workdir: str, devices: int = 1, check: bool = True, timeout: float = 240,
          **overrides):
    result = run(train_command(workdir, **overrides), devices, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def start(command, devices: int = 1, **extra_env) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO, env=env(devices, **extra_env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def losses(workdir: str) -> dict:
    """{step: train_loss} of metrics.jsonl (one line per step with train.log_every=1)."""
    path = os.path.join(workdir, "metrics.jsonl")
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return {r["step"]: r["train_loss"] for r in records if "train_loss" in r}


def wait_for_step(workdir: str, step: int, process: subprocess.Popen, timeout: float = 180):
    """Blocks until metrics.jsonl shows `step` (the loop is running), or the process ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.communicate()[1][-3000:]}")
        try:
            if max(losses(workdir), default=0) >= step:
                return
        except (FileNotFoundError, json.JSONDecodeError, ValueError):
            pass
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"step {step} never came")


def interrupt_at(workdir: str, step: int, command, sig=signal.SIGKILL, devices: int = 1):
    """Starts `command`, sends `sig` once step `step` is logged; returns (returncode, stderr)."""
    process = start(command, devices)
    wait_for_step(workdir, step, process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def checkpoint_steps(workdir: str) -> list:
    root = os.path.join(workdir, "checkpoints")
    return sorted(int(name) for name in os.listdir(root) if name.isdigit())


def tree_listing(path: str) -> dict:
    """{relative path: (size, mtime_ns)} of every file below `path`: proof nothing changed."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            st = os.stat(full)
            out[os.path.relpath(full, path)] = (st.st_size, st.st_mtime_ns)
    return out


def error_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.startswith("error:")]
