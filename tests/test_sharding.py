"""Meshes and shardings: the rules place parameters as named, and any mesh trains like 1 device.

The multi-device tests run this file as a script in a subprocess with 8 fake CPU devices
(XLA_FLAGS must be set before jax is imported); one process runs several meshes, paying start-up
once. fsdp=8 and 2x2x2 (every axis) run by default; data=8 and tensor=2 x data=4 are slow-marked.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

if __name__ != "__main__":
    from tests import helpers

MESHES = {  # name -> (data, fsdp, tensor)
    "data8": (8, 1, 1),
    "fsdp8": (1, 8, 1),
    "tensor2_data4": (4, 1, 2),
    "data2_fsdp2_tensor2": (2, 2, 2),
    "data2_fsdp2_tensor2_hash": (2, 2, 2),  # dropout masks from model.dropout_rng = "hash"
}
FAST_MESHES = ("fsdp8", "data2_fsdp2_tensor2", "data2_fsdp2_tensor2_hash")
STEPS = 5
# Dropout on: its masks, drawn from a counter-based PRNG, must be the same on every mesh.
OVERRIDES = {"model.num_kv_heads": 2, "optim.lr": 3e-3, "optim.warmup_steps": 0,
             "model.dropout": 0.1}


def dropout_rng(mesh_name):
    return "hash" if mesh_name.endswith("_hash") else "threefry"


def reference_name(mesh_name):
    """The 1-device run a mesh's losses are compared with: the same dropout_rng."""
    return "one_device" + ("_hash" if dropout_rng(mesh_name) == "hash" else "")


LEAVES = {
    "embedding": ("embed", "embedding"),
    "pos_embed": ("pos_embed",),
    "query": ("layer_0", "attn", "query", "kernel"),
    "key": ("layer_0", "attn", "key", "kernel"),
    "out": ("layer_0", "attn", "out", "kernel"),
    "fc_in": ("layer_0", "mlp", "fc_in", "kernel"),
    "fc_out": ("layer_0", "mlp", "fc_out", "kernel"),
    "norm": ("layer_0", "attn_norm", "scale"),
}


def test_single_device_mesh_and_rules():
    import jax
    from lmjax.parallel import mesh as mesh_lib
    from lmjax.parallel import shardings as sharding
    cfg = helpers.tiny_config()
    mesh = mesh_lib.make_mesh(cfg, jax.devices()[:1])
    assert dict(mesh.shape) == {"data": 1, "expert": 1, "fsdp": 1, "tensor": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    rules = sharding.rules(cfg)
    assert sharding.batch_sharding(mesh, rules).spec == P(("data", "expert", "fsdp"), None)
    parts = helpers.TrainParts(cfg, jax.devices()[:1])
    specs = parts.state_sh.params
    assert specs["embed"]["embedding"].spec == P("tensor", "fsdp")
    assert specs["layer_0"]["attn"]["query"]["kernel"].spec == P("fsdp", "tensor", None)
    assert specs["layer_0"]["mlp"]["fc_out"]["kernel"].spec == P("tensor", "fsdp")
    assert specs["layer_0"]["attn_norm"]["scale"].spec == P(None)
    # Adam's moments are sharded like the parameters they follow.
    adam = parts.state_sh.opt_state[1][0]
    assert adam.mu["embed"]["embedding"].spec == P("tensor", "fsdp")


def test_scanned_layers_axis_is_unsharded():
    import jax
    parts = helpers.TrainParts(helpers.tiny_config({"model.scan_layers": True}),
                               jax.devices()[:1])
    assert parts.state_sh.params["layers"]["attn"]["query"]["kernel"].spec == \
        P(None, "fsdp", "tensor", None)


def run_meshes(names):
    """In the 8-device process: 5 train steps on 1 device and on each mesh; losses and layouts."""
    import jax
    from tests import helpers
    assert jax.device_count() == 8
    base = helpers.tiny_config(OVERRIDES)
    batch = helpers.random_tokens(base, seed=0)  # one batch, so the loss must fall
    params = None
    results = {}
    references = sorted({reference_name(n) for n in names})
    for name, shape in [(r, (1, 1, 1)) for r in references] + [(n, MESHES[n]) for n in names]:
        cfg = helpers.tiny_config({**OVERRIDES, "mesh.data": shape[0], "mesh.fsdp": shape[1],
                                   "mesh.tensor": shape[2],
                                   "model.dropout_rng": dropout_rng(name)})
        devices = jax.devices()[:1] if name in references else jax.devices()
        parts = helpers.TrainParts(cfg, devices)
        if params is None:
            from lmjax.train.state import abstract_params
            shapes = helpers.strip_boxes(abstract_params(parts.model, cfg))
            params = helpers.randomize(shapes, seed=0, std=0.02)  # the same weights everywhere
        state = parts.init(params)
        losses = []
        for _ in range(STEPS):
            state, metrics = parts.step(state, batch)
            losses.append(float(metrics["train_loss"]))
        layout = {}
        for leaf_name, path in LEAVES.items():
            leaf = state.params
            for key in path:
                leaf = leaf[key]
            layout[leaf_name] = {"spec": [list(a) if isinstance(a, tuple) else a
                                          for a in leaf.sharding.spec],
                                 "shard": list(leaf.sharding.shard_shape(leaf.shape)),
                                 "devices": len(leaf.sharding.device_set)}
        inputs = parts.batch(batch)["inputs"]
        layout["batch"] = {"shard": list(inputs.sharding.shard_shape(inputs.shape))}
        results[name] = {"losses": losses, "layout": layout,
                         "mesh": dict(parts.mesh.shape)}
    print("RESULTS " + json.dumps(results))


_RESULTS = {}


def results_for(mesh):
    """Runs the fast meshes (or all the slow ones) together in one 8-device process, once."""
    group = FAST_MESHES if mesh in FAST_MESHES else tuple(m for m in MESHES if m not in FAST_MESHES)
    if group not in _RESULTS:
        env = helpers.cli_env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), *group],
                              cwd=helpers.REPO, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")][-1]
        _RESULTS[group] = json.loads(line[len("RESULTS "):])
    return _RESULTS[group]


def mesh_param(name):
    return pytest.param(name, marks=() if name in FAST_MESHES else pytest.mark.slow)


@pytest.mark.parametrize("mesh", [mesh_param(m) for m in MESHES])
def test_mesh_losses_equal_one_device(mesh):
    results = results_for(mesh)
    reference = results[reference_name(mesh)]["losses"]
    losses = results[mesh]["losses"]
    data, fsdp, tensor = MESHES[mesh]
    assert results[mesh]["mesh"] == {"data": data, "expert": 1, "fsdp": fsdp, "tensor": tensor}
    assert len(losses) == STEPS and reference[-1] < reference[0] - 0.05  # it trains
    np.testing.assert_allclose(losses, reference, rtol=1e-5, atol=0)


def _sharded(layout, leaf):
    return layout[leaf]["spec"], layout[leaf]["shard"]


def test_fsdp8_shards_the_embed_dimension():
    layout = results_for("fsdp8")["fsdp8"]["layout"]
    assert _sharded(layout, "embedding") == (["tensor", "fsdp"], [64, 4])
    assert _sharded(layout, "pos_embed") == ([None, "fsdp"], [16, 4])
    assert _sharded(layout, "query") == (["fsdp", "tensor", None], [4, 4, 8])
    assert _sharded(layout, "fc_out") == (["tensor", "fsdp"], [64, 4])
    assert layout["norm"]["shard"] == [32]  # norms stay whole
    assert layout["batch"]["shard"] == [1, 16]


@pytest.mark.slow
def test_tensor2_shards_heads_and_mlp():
    layout = results_for("tensor2_data4")["tensor2_data4"]["layout"]
    assert _sharded(layout, "query") == (["fsdp", "tensor", None], [32, 2, 8])
    assert _sharded(layout, "key") == (["fsdp", "tensor", None], [32, 1, 8])  # 2 kv heads / 2
    assert _sharded(layout, "out") == (["tensor", None, "fsdp"], [2, 8, 32])
    assert _sharded(layout, "fc_in") == (["fsdp", "tensor"], [32, 32])
    assert _sharded(layout, "embedding") == (["tensor", "fsdp"], [32, 32])
    assert layout["batch"]["shard"] == [2, 16]


def test_2x2x2_shards_over_every_axis():
    layout = results_for("data2_fsdp2_tensor2")["data2_fsdp2_tensor2"]["layout"]
    assert _sharded(layout, "query") == (["fsdp", "tensor", None], [16, 2, 8])
    assert _sharded(layout, "fc_in") == (["fsdp", "tensor"], [16, 32])
    assert layout["query"]["devices"] == 8
    assert layout["batch"]["shard"] == [2, 16]


@pytest.mark.slow
def test_data8_replicates_parameters():
    layout = results_for("data8")["data8"]["layout"]
    assert layout["query"]["shard"] == [32, 4, 8] and layout["query"]["devices"] == 8
    assert layout["batch"]["shard"] == [1, 16]


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run_meshes(sys.argv[1:])
