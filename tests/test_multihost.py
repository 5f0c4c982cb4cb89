"""Several processes: two CPU processes on 127.0.0.1 train like one process with two devices, their
checkpoint restores in one process, and an unreachable coordinator fails fast with one line."""
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import checkpoint_helpers as h

STEPS = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multiprocess_train(workdir: str, count: int = 2, **overrides):
    port = free_port()
    processes = [h.start(h.train_command(workdir, **overrides) + [
        f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={count}",
        f"--process_id={i}", "--distributed_timeout_s=60"]) for i in range(count)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    return outputs


RESTORE_PARAMS = """
import sys, numpy as np, jax
from lmjax.infer.restore import load_train_state
out = {}
for i, workdir in enumerate(sys.argv[2:]):
    _, step, state = load_train_state(workdir)
    leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
    out.update({f"{i}:{jax.tree_util.keystr(p)}": np.asarray(x) for p, x in leaves})
    out[f"{i}:step"] = np.asarray(step)
np.savez(sys.argv[1], **out)
"""


def test_two_processes_train_like_one_process_with_two_devices(tmp_path):
    single = str(tmp_path / "single")
    h.train(single, devices=2, train__steps=STEPS)
    multi = str(tmp_path / "multi")
    outputs = multiprocess_train(multi, train__steps=STEPS)
    assert ("mesh: data=2 x expert=1 x fsdp=1 x tensor=1 over 2 cpu device(s), 2 process(es)"
            in outputs[0][0])
    assert "mesh:" not in outputs[1][0]  # only process 0 logs

    reference, losses = h.losses(single), h.losses(multi)
    assert sorted(losses) == list(range(1, STEPS + 1))  # one line per step: one writer
    np.testing.assert_allclose([losses[s] for s in sorted(losses)],
                               [reference[s] for s in sorted(reference)], rtol=1e-6, atol=0)

    # The checkpoint both processes wrote restores in one process with one device.
    npz = str(tmp_path / "params.npz")
    result = h.run([sys.executable, "-c", RESTORE_PARAMS, npz, multi, single], devices=1)
    assert result.returncode == 0, result.stderr[-3000:]
    arrays = np.load(npz)
    assert arrays["0:step"] == STEPS
    names = [k[2:] for k in arrays.files if k.startswith("0:") and k != "0:step"]
    assert names
    for name in names:
        np.testing.assert_allclose(arrays["0:" + name], arrays["1:" + name], rtol=1e-5,
                                   atol=1e-7, err_msg=name)


@pytest.mark.slow
def test_two_process_checkpoint_continues_in_one_process(tmp_path):
    multi = str(tmp_path / "multi")
    multiprocess_train(multi, train__steps=STEPS, train__checkpoint_every=STEPS)
    result = h.train(multi, train__steps=STEPS + 2)
    assert f"resumed from step {STEPS}" in result.stdout
    assert sorted(h.losses(multi)) == list(range(1, STEPS + 3))


def test_unreachable_coordinator_fails_fast_with_one_line(tmp_path, capsys):
    from lmjax.main import train_main
    workdir = tmp_path / "run"
    port = free_port()
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        train_main(h.train_args(str(workdir)) + [
            f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=1",
            "--distributed_timeout_s=2"])
    elapsed = time.monotonic() - start
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: --coordinator_address=127.0.0.1:{port}: nobody listened")
    assert "--distributed_timeout_s" in err[0]
    assert 2 <= elapsed < 15
    assert not os.path.exists(workdir / "checkpoints")


def test_unreachable_coordinator_from_environment(tmp_path):
    port = free_port()
    result = h.run(h.train_command(str(tmp_path / "run")), LMJAX_COORDINATOR=f"127.0.0.1:{port}",
                   LMJAX_NUM_PROCESSES=2, LMJAX_PROCESS_ID=1, LMJAX_DISTRIBUTED_TIMEOUT_S=1)
    assert result.returncode == 2
    assert h.error_lines(result.stderr) == [line for line in result.stderr.splitlines() if line]
    assert "nobody listened there within 1 s" in result.stderr


def test_incomplete_distributed_flags_are_a_usage_error(tmp_path, capsys):
    from lmjax.main import train_main
    with pytest.raises(SystemExit) as exit_info:
        train_main(h.train_args(str(tmp_path / "run")) + ["--num_processes=2"])
    assert exit_info.value.code == 2
    assert "go together" in capsys.readouterr().err
