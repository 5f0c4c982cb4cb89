"""Restoring onto another mesh: a checkpoint saved with fsdp=8 on 8 devices restores, shard by
shard, onto 1 device and onto tensor=2 x data=4 with identical values, and training continues."""
import shutil
import sys

import numpy as np
import pytest

import checkpoint_helpers as h

RUN = dict(train__steps=6, train__checkpoint_every=4, model__vocab_size=66)
SAVED = dict(mesh__data=1, mesh__fsdp=8, mesh__tensor=1)

RESTORE_ONTO_MESHES = """
import sys, numpy as np, jax
from lmjax.parallel import mesh as mesh_lib
from lmjax.parallel import shardings as sharding
from lmjax.infer.restore import load_config, load_train_state
workdir, out = sys.argv[1], sys.argv[2]
arrays = {}
for name, (data, fsdp, tensor), count in (("fsdp8", (1, 8, 1), 8), ("t2d4", (4, 1, 2), 8),
                                          ("one", (1, 1, 1), 1)):
    cfg = load_config(workdir)
    with cfg.unlocked():
        cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = data, fsdp, tensor
    mesh = mesh_lib.make_mesh(cfg, devices=jax.devices()[:count])
    _, step, state = load_train_state(workdir, step=4, cfg=cfg, mesh=mesh)
    assert step == 4
    # (embed, mlp) = (32, 64), behind a leading layers axis when the layers are scanned.
    layer = state.params["layers"] if "layers" in state.params else state.params["layer_0"]
    kernel = layer["mlp"]["fc_in"]["kernel"]
    arrays[f"{name}:shard"] = np.asarray(kernel.sharding.shard_shape(kernel.shape)[-2:])
    arrays[f"{name}:devices"] = np.asarray(len(kernel.sharding.device_set))
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        arrays[f"{name}:{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
np.savez(out, **arrays)
"""


@pytest.fixture(scope="module")
def saved_fsdp8(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("fsdp8"))
    result = h.train(workdir, devices=8, **RUN, **SAVED)
    assert "mesh: data=1 x expert=1 x fsdp=8 x tensor=1 over 8 cpu device(s)" in result.stdout
    assert h.checkpoint_steps(workdir) == [4, 6]
    return workdir


def test_restore_onto_other_meshes_gives_identical_values(saved_fsdp8, tmp_path):
    out = str(tmp_path / "restored.npz")
    result = h.run([sys.executable, "-c", RESTORE_ONTO_MESHES, saved_fsdp8, out], devices=8)
    assert result.returncode == 0, result.stderr[-3000:]
    arrays = np.load(out)
    # Each mesh got its own layout: shards where they belong, not a whole copy per device.
    assert tuple(arrays["fsdp8:shard"]) == (4, 64)
    assert tuple(arrays["t2d4:shard"]) == (32, 32) and arrays["t2d4:devices"] == 8
    assert tuple(arrays["one:shard"]) == (32, 64) and arrays["one:devices"] == 1
    leaves = [k.split(":", 1)[1] for k in arrays.files
              if k.startswith("fsdp8:") and k not in ("fsdp8:shard", "fsdp8:devices")]
    assert any("params" in k for k in leaves) and any("opt_state" in k for k in leaves)
    for leaf in leaves:
        for mesh in ("t2d4", "one"):
            assert np.array_equal(arrays[f"fsdp8:{leaf}"], arrays[f"{mesh}:{leaf}"]), (mesh, leaf)


def _continue(saved, tmp_path, devices, **mesh):
    workdir = str(tmp_path / "continued")
    shutil.copytree(saved, workdir)
    shutil.rmtree(f"{workdir}/checkpoints/6")
    result = h.train(workdir, devices=devices, **RUN, **mesh)
    assert "resumed from step 4" in result.stdout
    expected, got = h.losses(saved), h.losses(workdir)
    # Another mesh sums in another order: equal to float32 rounding, not bit for bit.
    np.testing.assert_allclose([got[5], got[6]], [expected[5], expected[6]], rtol=2e-5)


@pytest.mark.slow
def test_fsdp8_checkpoint_continues_on_one_device(saved_fsdp8, tmp_path):
    _continue(saved_fsdp8, tmp_path, devices=1)


@pytest.mark.slow
def test_fsdp8_checkpoint_continues_on_tensor2_data4(saved_fsdp8, tmp_path):
    _continue(saved_fsdp8, tmp_path, devices=8, mesh__data=4, mesh__fsdp=1, mesh__tensor=2)
