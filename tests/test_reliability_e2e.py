"""Reliability end to end, as a user meets each fault: a frozen process and a blocked input
pipeline (hang watchdog), a stuck save barrier, a second run on a live workdir and a kill -9
(workdir lock), a disk that fills mid-run, and goodput across a kill -9. Each runs real
`python -m lmjax.main` processes, so all are slow; test_reliability.py has the fast checks."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import checkpoint_helpers as h
from test_multihost import free_port

pytestmark = pytest.mark.slow
HANG_EXIT_CODE = 75
STEPS = 12
RUN = dict(train__steps=STEPS, train__checkpoint_every=4)


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]  # every line must parse: none half-written


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Losses of one uninterrupted run, and its prepared data for the other runs to read."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    h.train(workdir, timeout=900, **RUN)
    return h.losses(workdir), os.path.join(workdir, "data")


BLOCKING_INPUT = """
import sys, threading, time
from lmjax.train import loop
slow_at, block_at, real = int(sys.argv[1]), int(sys.argv[2]), loop.make_data

class Input:
    def __init__(self, inner):
        self.inner, self.fetched = inner, 0
    def __next__(self):
        self.fetched += 1
        if self.fetched == slow_at:
            time.sleep(float(sys.argv[3]))  # slow, but under the bound
        if self.fetched == block_at:
            threading.Event().wait()  # the input pipeline never delivers again
        return next(self.inner)
    def __getattr__(self, name):
        return getattr(self.inner, name)

def make_data(*args, **kwargs):
    data = real(*args, **kwargs)
    data.train = Input(data.train)
    return data

loop.make_data = make_data
from lmjax.main import train_main
train_main(sys.argv[4:])
"""


def test_blocked_input_pipeline_exits_with_the_hang_code_and_resumes_exactly(prepared,
                                                                             tmp_path):
    reference, data = prepared
    workdir = str(tmp_path / "run")
    args = h.train_args(workdir, data__path=data, train__hang_timeout_s=20, **RUN)
    # Batch 3 takes 12 s (under the 20 s bound, no report); batch 7 never comes (after step 6).
    start = time.monotonic()
    result = h.run([sys.executable, "-c", BLOCKING_INPUT, "3", "7", "12", *args], timeout=900)
    elapsed = time.monotonic() - start
    assert result.returncode == HANG_EXIT_CODE, result.stderr[-3000:]
    assert os.listdir(os.path.join(workdir, "hangs")) == ["0-6.txt"]  # nothing for the slow one
    report = open(os.path.join(workdir, "hangs", "0-6.txt")).read()
    assert "phase step" in report and "in __next__" in report  # the blocked thread's stack
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no progress for") and f"code {HANG_EXIT_CODE}" in last
    print(f"hang reported and exited {elapsed:.0f} s after start")

    rerun = h.train(workdir, data__path=data, train__hang_timeout_s=20, timeout=900, **RUN)
    assert "resumed from step 4" in rerun.stdout
    assert h.losses(workdir) == reference


def _two_processes(workdir, **overrides):
    port = free_port()
    return [h.start(h.train_command(workdir, **overrides) + [
        f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
        "--distributed_timeout_s=120"]) for i in range(2)]


def test_frozen_process_is_reported_and_the_restarted_job_resumes_exactly(prepared, tmp_path):
    _, data = prepared
    overrides = dict(data__path=data, train__hang_timeout_s=30, train__steps=40,
                     train__checkpoint_every=4)
    reference_dir = str(tmp_path / "uninterrupted")
    for p in _two_processes(reference_dir, **overrides):
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    reference = h.losses(reference_dir)

    workdir = str(tmp_path / "run")
    first, second = _two_processes(workdir, **overrides)
    h.wait_for_step(workdir, 6, first, timeout=600)
    deadline = time.monotonic() + 300
    while 4 not in h.checkpoint_steps(workdir) and time.monotonic() < deadline:
        time.sleep(0.05)  # the step-4 save has committed on both processes
    second.send_signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    _, err = first.communicate(timeout=30 + 60)
    took = time.monotonic() - frozen_at
    second.kill()
    second.communicate()
    assert first.returncode == HANG_EXIT_CODE, err[-3000:]
    assert took <= 30 + 30, took
    reports = os.listdir(os.path.join(workdir, "hangs"))
    assert len(reports) == 1 and reports[0].startswith("0-"), reports
    report = open(os.path.join(workdir, "hangs", reports[0])).read()
    assert "process 0 on host" in report and "Thread" in report
    print(f"process 0 reported the hang and exited {took:.1f} s after process 1 froze")
    saved = max(h.checkpoint_steps(workdir))

    outputs = [p.communicate(timeout=600) + (p.returncode,)
               for p in _two_processes(workdir, **overrides)]
    for _, err, code in outputs:
        assert code == 0, err[-3000:]
    assert f"resumed from step {saved}" in outputs[0][0]
    resumed = h.losses(workdir)
    assert resumed == reference  # bit for bit, every step


STUCK_SAVE = """
import sys, time
import jax, jax.numpy as jnp
from lmjax.parallel import distributed
distributed.initialize(distributed.Settings(sys.argv[1], 2, int(sys.argv[2]), 60))
from ml_collections import ConfigDict
from lmjax.train import barriers, checkpoint
from lmjax.train.saves import Saves
cfg = ConfigDict({"keep_checkpoints": 2, "keep_every": 0, "barrier_timeout_s": 5,
                  "on_save_error": "stop", "checkpoint_every": 1})
barriers.configure(cfg.barrier_timeout_s)
manager = checkpoint.make_manager(sys.argv[3], cfg)

class State:
    params = {"w": jnp.ones(4)}
    opt_state = {}
jax.tree_util.register_pytree_node(State, lambda s: ((s.params, s.opt_state), None),
                                   lambda _, c: State())
if jax.process_index() == 1:
    time.sleep(40)  # never reaches the save
    sys.exit(0)
start = time.monotonic()
try:
    Saves(manager, cfg).save(3, State(), {}, {}, 0)
except barriers.BarrierTimeout as e:
    print(f"{time.monotonic() - start:.1f} error: {e}", flush=True)
    sys.exit(barriers.BarrierTimeout.exit_code)
"""


def test_a_save_barrier_one_process_never_reaches_ends_in_one_line(tmp_path):
    port = free_port()
    processes = [h.start([sys.executable, "-c", STUCK_SAVE, f"127.0.0.1:{port}", str(i),
                          str(tmp_path / "run")]) for i in range(2)]
    out, err = processes[0].communicate(timeout=120)
    processes[1].kill()
    assert processes[0].returncode == HANG_EXIT_CODE, err[-3000:]
    seconds, message = out.strip().split(" ", 1)
    print(f"the save gave up {seconds} s after it started: {message}")
    assert float(seconds) <= 5 + 5, seconds
    assert message.startswith("error: checkpoint save of step 3: process 1 never arrived "
                              "within train.barrier_timeout_s=5 s"), message


def test_second_run_is_refused_while_the_first_continues_then_takes_over_after_kill9(
        prepared, tmp_path):
    _, data = prepared
    workdir = str(tmp_path / "run")
    command = h.train_command(workdir, data__path=data, train__steps=100000,
                              train__checkpoint_every=20)
    first = h.start(command)
    h.wait_for_step(workdir, 3, first, timeout=600)
    second = h.run(command, timeout=900)
    assert second.returncode == 2
    assert h.error_lines(second.stderr) == [line for line in second.stderr.splitlines()
                                            if line.startswith("error")]
    assert len(h.error_lines(second.stderr)) == 1
    assert f"in use by another lmjax-train (pid {first.pid}" in second.stderr
    reached = max(h.losses(workdir))
    h.wait_for_step(workdir, reached + 30, first)  # the first run carries on unharmed
    first.kill()
    first.wait()
    steps = [r["step"] for r in _records(workdir) if "train_loss" in r]
    assert steps == list(range(1, len(steps) + 1))  # one writer: no interleaving
    saved = max(h.checkpoint_steps(workdir))

    third = h.start(command)
    deadline = time.monotonic() + 600
    while third.poll() is None and time.monotonic() < deadline:
        if max(h.losses(workdir), default=0) < steps[-1]:
            break  # the resumed run cut metrics.jsonl back to its checkpoint
        time.sleep(0.1)
    h.wait_for_step(workdir, saved + 3, third, timeout=600)
    third.send_signal(signal.SIGTERM)
    out, err = third.communicate(timeout=120)
    assert "taking over the lock" in err and f"pid {first.pid}" in err and "no longer exists" \
        in err, err[-2000:]
    assert f"resumed from step {saved}" in out


def _mount(path, size):
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a size-limited tmpfs ({result.stderr.strip()}); needs root")


def _du(path):
    return sum(os.stat(os.path.join(root, f)).st_blocks * 512
               for root, _, files in os.walk(path) for f in files)


def test_full_disk_stops_in_one_line_keeps_the_checkpoint_and_resumes_exactly(prepared,
                                                                               tmp_path):
    reference, data = prepared
    # One checkpoint's size, measured on a roomy tmpfs with the same command.
    roomy = str(tmp_path / "roomy")
    _mount(roomy, "64m")
    try:
        h.train(roomy + "/run", data__path=data, train__steps=4, train__checkpoint_every=4,
                timeout=900)
        one = _du(roomy + "/run/checkpoints/4")
        rest = _du(roomy + "/run") - one
    finally:
        subprocess.run(["umount", "-l", roomy])
    fs = str(tmp_path / "fs")
    _mount(fs, str(rest + one + one // 2))  # room for the first checkpoint, not the second
    try:
        workdir = fs + "/run"
        result = h.train(workdir, check=False, data__path=data, timeout=900, **RUN)
        assert result.returncode == 1, result.stderr[-3000:]
        errors = h.error_lines(result.stderr)
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert "Event loop is closed" not in result.stderr
        assert errors[0].startswith(f"error: checkpoint save of step 8 to {workdir}/checkpoints"
                                    "/8 failed: No space left on device [ENOSPC]"), errors[0]
        assert "MiB" in errors[0] and "the previous checkpoint (step 4) is intact" in errors[0]
        print(f"on a {(rest + one + one // 2) / 2**20:.2f} MiB tmpfs: {errors[0]}")
        assert h.checkpoint_steps(workdir) == [4]
        assert os.listdir(workdir + "/checkpoints") == ["4"]
        steps = [r["step"] for r in _records(workdir) if "train_loss" in r]
        assert steps[:8] == list(range(1, 9))

        subprocess.run(["mount", "-o", "remount,size=64m", fs], check=True)  # space freed
        rerun = h.train(workdir, data__path=data, timeout=900, **RUN)
        assert "resumed from step 4" in rerun.stdout
        assert h.losses(workdir) == reference
    finally:
        subprocess.run(["umount", "-l", fs])


def test_goodput_adds_up_to_the_wall_time_and_counts_recomputed_steps_as_lost(prepared,
                                                                             tmp_path):
    _, data = prepared
    workdir = str(tmp_path / "run")
    run = dict(data__path=data, train__steps=40, train__checkpoint_every=8)
    command = h.train_command(workdir, **run)
    started = time.time()
    first = h.start(command)
    h.wait_for_step(workdir, 8, first, timeout=600)
    deadline = time.monotonic() + 300
    while 8 not in h.checkpoint_steps(workdir) and time.monotonic() < deadline:
        time.sleep(0.05)
    h.wait_for_step(workdir, 10, first)  # past the committed step 8, before the save of 16
    first.kill()
    first.wait()
    saved = max(h.checkpoint_steps(workdir))
    ledger_path = os.path.join(workdir, "goodput.json")
    ledger = json.load(open(ledger_path))
    reached = ledger["step"]  # written at each log step, just before metrics.jsonl
    assert reached >= max(h.losses(workdir)) and reached > saved
    # An independent clock: the first process lived from `started` to its last ledger write.
    assert ledger["total_s"] == pytest.approx(os.path.getmtime(ledger_path) - started, rel=0.02)

    restarted = time.time()
    h.train(workdir, timeout=900, **run)
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    buckets, total = summary["goodput_buckets_s"], summary["goodput_total_s"]
    assert sum(buckets.values()) == pytest.approx(total, rel=1e-9)
    second = os.path.getmtime(os.path.join(workdir, "summary.json")) - restarted
    assert total == pytest.approx(ledger["total_s"] + second, rel=0.02)
    assert summary["lost_steps"] == reached - saved > 0 and summary["runs"] == 2
    assert buckets["lost"] > 0
    assert summary["goodput"] == pytest.approx(buckets["productive"] / total)
    print(f"kill -9 at step {reached}, checkpoint {saved}: goodput {summary['goodput']:.3f}, "
          f"buckets {json.dumps({k: round(v, 2) for k, v in buckets.items()})}, total "
          f"{total:.1f} s vs {ledger['total_s'] + second:.1f} s by the test's clock")
