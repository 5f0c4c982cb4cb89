"""Reliability, fast checks: the workdir lock refuses a second run and takes over a dead one's,
goodput buckets add up to the wall time, the watchdog fires on a stall but not on a slow step,
a save that hits a full disk keeps the previous checkpoint and says so in one line, and
metrics.jsonl keeps whole lines on a full disk. End-to-end runs are in test_reliability_e2e.py."""
import collections
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import checkpoint_helpers as h

HOLD_LOCK = """
import sys, time
from lmjax.train.lock import FileLock
FileLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_second_run_on_a_held_workdir_is_refused_in_one_line_and_touches_nothing(tmp_path,
                                                                                 capsys):
    from lmjax.main import train_main
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text('{"step": 1, "train_loss": 4.0}\n')
    holder = h.start([sys.executable, "-c", HOLD_LOCK, str(workdir)])
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        before = h.tree_listing(str(workdir))
        with pytest.raises(SystemExit) as exit_info:
            train_main(h.train_args(str(workdir)))
        assert exit_info.value.code == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1, err
        assert err[0].startswith(f"error: --workdir={workdir}: in use by another lmjax-train")
        assert f"pid {holder.pid} on host" in err[0]
        assert h.tree_listing(str(workdir)) == before
    finally:
        holder.kill()
        holder.wait()
    # The holder died (as kill -9 leaves it): its lock file remains, and is taken over.
    from lmjax.train.lock import FileLock
    warnings = []
    lock = FileLock(str(workdir), warn=warnings.append)
    lock.acquire()
    assert len(warnings) == 1 and f"pid {holder.pid}" in warnings[0], warnings
    assert "no longer exists" in warnings[0]
    assert json.loads((workdir / "lmjax.lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_lease_lock_refuses_a_fresh_heartbeat_and_takes_over_a_stale_one(tmp_path):
    from lmjax.errors import UsageError
    from lmjax.train.lock import LeaseLock
    first = LeaseLock(str(tmp_path), lease_s=0.4)
    first.acquire()
    time.sleep(0.6)  # past one lease: only the heartbeat keeps it held
    with pytest.raises(UsageError, match="in use by another lmjax-train"):
        LeaseLock(str(tmp_path), lease_s=0.4).acquire()
    first._stop.set()  # the holder stalls: no more heartbeats
    first._thread.join()
    time.sleep(0.5)
    warnings = []
    second = LeaseLock(str(tmp_path), warn=warnings.append, lease_s=0.4)
    second.acquire()
    assert len(warnings) == 1 and "last heartbeat was" in warnings[0], warnings
    # The stalled holder wakes up: its next heartbeat finds the lease taken and gives up.
    lost = []
    first.warn = lost.append
    assert first.renew() is False and "was taken by" in lost[0]
    from lmjax.train.lock import LeaseLost
    with pytest.raises(LeaseLost):
        first.check()
    second.release()
    assert not (tmp_path / "lmjax.lock").exists()


def test_goodput_buckets_add_up_to_wall_time_and_recomputed_steps_are_lost(tmp_path):
    from lmjax.train.goodput import Goodput
    start = time.time()
    first = Goodput(str(tmp_path), start_time=start)
    time.sleep(0.1)  # start-up
    with first.phase("compile"):
        time.sleep(0.2)
    for step in range(1, 7):
        first.enter(first.step_bucket(step))
        time.sleep(0.05)
        if step == 3:
            with first.phase("checkpoint"):
                time.sleep(0.1)
    totals = first.save(6)  # the last ledger write before a kill -9
    wall = time.time() - start
    buckets = totals["buckets_s"]
    assert abs(sum(buckets.values()) - wall) <= 0.02 * wall, (buckets, wall)
    assert buckets["compile"] == pytest.approx(0.2, abs=0.05)
    assert buckets["checkpoint"] == pytest.approx(0.1, abs=0.05)
    assert buckets["productive"] == pytest.approx(0.3, abs=0.08)
    assert buckets["lost"] == 0 and totals["goodput"] == pytest.approx(
        buckets["productive"] / wall, rel=0.02)

    # The next run resumes from the checkpoint at step 3: steps 4-6 are done again.
    second = Goodput(str(tmp_path))
    second.resumed_at(3)
    for step in range(4, 9):
        second.enter(second.step_bucket(step))
        time.sleep(0.05)
    again = second.save(8)
    assert second.lost_steps == 3 and again["lost_steps"] == 3 and again["runs"] == 2
    assert again["buckets_s"]["lost"] == pytest.approx(0.15, abs=0.06)
    assert again["buckets_s"]["productive"] == pytest.approx(
        buckets["productive"] + 0.1, abs=0.06)
    assert again["total_s"] == pytest.approx(wall + second.totals(8)["this_run_s"], rel=0.02)


def test_watchdog_fires_on_a_stall_but_not_on_a_slow_step_under_the_bound(tmp_path):
    from ml_collections import ConfigDict
    from lmjax.train.watchdog import HANG_EXIT_CODE, Watchdog
    exits = []
    cfg = ConfigDict({"on_hang": "exit", "hang_timeout_s": 1.0, "hang_compile_timeout_s": 1.0,
                      "barrier_timeout_s": 5})
    with Watchdog(cfg, str(tmp_path), process_index=0, exit_fn=exits.append,
                  poll_s=0.05) as dog:
        for step in range(1, 4):
            time.sleep(0.8)  # slow, but under the 1 s bound
            dog.beat(step)
        assert not exits and not (tmp_path / "hangs").exists()
        dog.sync_point("checkpoint save of step 3")
        time.sleep(1.6)  # a stall
    assert exits == [HANG_EXIT_CODE]
    report = (tmp_path / "hangs" / "0-3.txt").read_text()
    assert "process 0 on host" in report and "step 3" in report and "phase step" in report
    assert "checkpoint save of step 3" in report
    assert "test_watchdog_fires_on_a_stall" in report  # this thread's stack


def _tmpfs(path, size: str):
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a size-limited tmpfs here ({result.stderr.strip()}); "
                    "the full-disk tests need root")


@pytest.fixture
def tiny_fs(tmp_path):
    fs = tmp_path / "fs"
    _tmpfs(fs, "1m")
    yield fs
    subprocess.run(["umount", "-l", str(fs)])


def test_save_on_a_full_disk_keeps_the_previous_checkpoint_and_stops_in_one_line(tiny_fs):
    import jax.numpy as jnp
    from ml_collections import ConfigDict
    from lmjax.train import checkpoint
    from lmjax.train.saves import SaveFailed, Saves
    State = collections.namedtuple("State", "params opt_state")
    small = State({"w": jnp.arange(1000, dtype=jnp.float32)}, {})
    # Random values: compression cannot shrink them below the 1 MiB the disk holds.
    big = State({"w": jnp.asarray(np.random.RandomState(0).randn(400_000), jnp.float32)}, {})
    cfg = ConfigDict({"keep_checkpoints": 1, "keep_every": 0, "barrier_timeout_s": 60,
                      "on_save_error": "stop", "checkpoint_every": 4})
    workdir = str(tiny_fs / "run")
    manager = checkpoint.make_manager(workdir, cfg)
    saves = Saves(manager, cfg, warn=lambda _: None)
    saves.save(4, small, {}, {}, 0)
    saves.wait()
    with pytest.raises(SaveFailed) as failure:
        saves.save(8, big, {}, {}, 0)
        saves.wait()
    message = str(failure.value)
    assert "\n" not in message
    assert (f"checkpoint save of step 8 to {manager.directory / '8'} failed: No space left on "
            "device [ENOSPC]") in message
    assert "it needed up to 1.5 MiB" in message  # 400k float32
    assert "the previous checkpoint (step 4) is intact" in message
    assert os.listdir(manager.directory) == ["4"]  # the half-written step gave its space back
    restored = checkpoint.make_manager(workdir, cfg, read_only=True)
    step, state, _ = checkpoint.restore_latest(restored, small, warn=lambda m: None)
    assert step == 4
    np.testing.assert_array_equal(np.asarray(state.params["w"]), np.arange(1000))

    # on_save_error=continue: a warning, and the next save (which fits) succeeds.
    cfg.on_save_error = "continue"
    warnings = []
    saves = Saves(manager, cfg, warn=warnings.append)
    saves.save(12, big, {}, {}, 0)
    saves.wait()
    assert len(warnings) == 1 and "training continues" in warnings[0]
    saves.save(16, small, {}, {}, 0)
    saves.wait()
    assert checkpoint.make_manager(workdir, cfg, read_only=True).all_steps() == [16]


def test_metrics_on_a_full_disk_keep_whole_lines_and_catch_up(tiny_fs, capsys):
    from lmjax.train.metrics import JsonlWriter
    writer = JsonlWriter(None, str(tiny_fs))
    writer.write(1, {"step": 1, "train_loss": 4.0})
    ballast = tiny_fs / "ballast"
    with open(ballast, "wb", buffering=0) as f:  # fill the disk to its last byte
        for chunk in (b"x" * 65536, b"x"):
            try:
                while f.write(chunk):
                    pass
            except OSError:
                pass
    record = {"step": 2, "train_loss": 3.5, "padding": "y" * 8000}
    writer.write(2, record)
    assert [json.loads(line) for line in writer.path.read_text().splitlines()] == [
        {"step": 1, "train_loss": 4.0}]
    assert "holding the lines in memory" in capsys.readouterr().err
    ballast.unlink()
    writer.write(3, {"step": 3, "train_loss": 3.0})
    assert [json.loads(line)["step"] for line in writer.path.read_text().splitlines()] == [1, 2, 3]


def _tfrecords(path):
    """Events of a TFRecord file; fails on a record that is cut short or fails its CRC."""
    import struct
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c
    data, events, at = open(path, "rb").read(), [], 0
    while at < len(data):
        assert at + 12 <= len(data), f"{path}: a header cut short at byte {at}"
        header = data[at:at + 8]
        (length,) = struct.unpack("Q", header)
        assert struct.unpack("I", data[at + 8:at + 12])[0] == masked_crc32c(header)
        body = data[at + 12:at + 12 + length]
        assert len(body) == length and at + 16 + length <= len(data), f"{path}: cut short"
        assert struct.unpack("I", data[at + 12 + length:at + 16 + length])[0] == \
            masked_crc32c(body)
        events.append(event_pb2.Event.FromString(body))
        at += 16 + length
    return events


def test_tensorboard_events_on_a_full_disk_stay_whole_records(tiny_fs, capsys):
    pytest.importorskip("tensorboardX")
    import glob
    from lmjax.train.metrics import TensorBoardWriter
    writer = TensorBoardWriter(None, str(tiny_fs))
    writer.write(1, {"step": 1, "train_loss": 4.0})
    ballast = tiny_fs / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        for chunk in (b"x" * 65536, b"x"):
            try:
                while f.write(chunk):
                    pass
            except OSError:
                pass
    writer.write(2, {"step": 2, **{f"metric_{i}": float(i) for i in range(300)}})
    assert "holding them in memory" in capsys.readouterr().err
    ballast.unlink()
    writer.write(3, {"step": 3, "train_loss": 3.0})
    writer.close()
    scalars = sorted((e.step, v.tag, v.simple_value)
                     for path in glob.glob(str(tiny_fs / "tensorboard" / "events.out.tfevents.*"))
                     for e in _tfrecords(path) for v in e.summary.value)
    assert [(s, v) for s, tag, v in scalars if tag == "train_loss"] == [(1, 4.0), (3, 3.0)]
    assert [(s, v) for s, tag, v in scalars if tag == "metric_299"] == [(2, 299.0)]
