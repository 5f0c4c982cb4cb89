"""Checkpoint policies, unreadable checkpoints, a checkpoint of another model, bad input."""
import json
import os
import shutil

import pytest

import checkpoint_helpers as h

STEPS = 8
RUN = dict(train__steps=STEPS, train__checkpoint_every=2, train__keep_checkpoints=3)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run with checkpoints 4, 6, 8 (keep 3), and its per-step losses."""
    workdir = str(tmp_path_factory.mktemp("finished"))
    h.train(workdir, **RUN)
    assert h.checkpoint_steps(workdir) == [4, 6, 8]
    return workdir, h.losses(workdir)


def _copy(src, tmp_path):
    dst = str(tmp_path / "run")
    shutil.copytree(src, dst)
    return dst


def _state_files(workdir, step):
    root = os.path.join(workdir, "checkpoints", str(step), "state")
    return [os.path.join(r, f) for r, _, files in os.walk(root) for f in files]


def _truncate(workdir, step):
    for path in _state_files(workdir, step):
        if os.path.basename(os.path.dirname(path)) == "d":  # the array data, not the metadata
            with open(path, "r+b") as f:
                f.truncate(max(0, os.path.getsize(path) // 3))


def _delete(workdir, step):
    for path in _state_files(workdir, step):
        if os.path.basename(os.path.dirname(path)) == "d":
            os.remove(path)


def _kill_mid_save(workdir, step):
    # What a save killed half-way leaves: orbax's temporary directory, never renamed.
    root = os.path.join(workdir, "checkpoints")
    os.rename(os.path.join(root, str(step)), os.path.join(root, f"{step}.orbax-checkpoint-tmp-1"))


@pytest.mark.parametrize("damage", [
    _truncate,
    pytest.param(_delete, marks=pytest.mark.slow),
    pytest.param(_kill_mid_save, marks=pytest.mark.slow),
], ids=["truncated", "deleted", "killed_mid_save"])
def test_unreadable_latest_checkpoint_falls_back_to_previous(finished, tmp_path, damage):
    source, reference = finished
    workdir = _copy(source, tmp_path)
    damage(workdir, 8)
    result = h.train(workdir, **RUN)
    stderr = result.stderr
    assert "resumed from step 6" in result.stdout, result.stdout[-2000:] + stderr[-2000:]
    assert os.path.join("checkpoints", "8") in stderr  # the bad step is named
    # Steps 7 and 8 were trained again from step 6 and match the first run exactly.
    assert h.losses(workdir) == reference
    assert h.checkpoint_steps(workdir) == [4, 6, 8]
    if damage is not _kill_mid_save:
        assert "unreadable" in stderr
        moved = os.listdir(os.path.join(workdir, "checkpoints_unreadable"))
        assert len(moved) == 1 and moved[0].startswith("8-")


def test_checkpoint_of_another_model_shape_is_a_one_line_error(finished, tmp_path):
    workdir = _copy(finished[0], tmp_path)
    before = h.tree_listing(workdir)
    result = h.train(workdir, check=False, model__d_model=48, **RUN)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = h.error_lines(result.stderr)
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "params/embed/embedding: checkpoint (65, 32) vs model (65, 48)" in errors[0]
    assert h.tree_listing(workdir) == before


@pytest.mark.slow
def test_keep_policy_keeps_last_k_and_every_mth(tmp_path):
    workdir = str(tmp_path / "run")
    h.train(workdir, train__steps=9, train__checkpoint_every=1, train__keep_checkpoints=2,
            train__keep_every=4)
    # Last two (8, 9), every 4th for good (4, 8), and metadata on each.
    assert h.checkpoint_steps(workdir) == [4, 8, 9]
    with open(os.path.join(workdir, "checkpoints", "9", "_CHECKPOINT_METADATA")) as f:
        meta = json.load(f)["custom_metadata"]
    assert meta["step"] == 9 and meta["tokens_seen"] == 9 * 8 * 16
    assert meta["lmjax_version"] and meta["wall_time"] > 0 and meta["process_count"] == 1
    with open(os.path.join(workdir, "checkpoints", "9", "data", "metadata")) as f:
        data = json.load(f)
    assert data["process_count"] == 1 and len(data["states"]) == 1
    with open(os.path.join(workdir, "checkpoints", "9", "config", "metadata")) as f:
        assert json.load(f)["model"]["d_model"] == 32


def test_bad_workdirs_are_one_line_errors(tmp_path, capsys):
    from lmjax.main import train_main
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    for workdir, expected in ((str(a_file), "not a directory"),
                              (str(a_file / "sub"), "cannot write there"),
                              ("/proc/lmjax-run", "cannot write there")):
        with pytest.raises(SystemExit) as exit_info:
            train_main(h.train_args(workdir))
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --workdir=") and expected in err[0], err
    assert a_file.read_text() == "keep me"
