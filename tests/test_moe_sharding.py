"""Expert parallelism on 8 fake devices: MoE training on expert x data and expert x fsdp x tensor
meshes, with either transport of model.moe.expert_parallel, gives 1 device's losses, the expert
weights are split over `expert`, and a checkpoint saved with expert=4 restores onto 1 device
with identical values and trains on identically.

One subprocess (XLA_FLAGS before jax is imported) runs the meshes of a group, paying start-up
once. By default: expert x data training with shard_map (the default transport), the checkpoint,
and one MoE layer's output and gradients through the constraints transport against a bare
1-device apply (a small compile, where another train step would cost ~25 s on 2 cores); the
training runs of the constraints transport and of expert x fsdp x tensor are slow-marked.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

if __name__ != "__main__":
    from tests import helpers

STEPS = 20
MOE = {"model.mlp": "moe", "model.moe.num_experts": 8, "model.moe.top_k": 2,
       "model.moe.d_ff": 32, "model.moe.z_loss_coef": 1e-3, "model.num_kv_heads": 2,
       "optim.lr": 3e-3, "optim.warmup_steps": 0}
SHAPES = {  # name -> mesh fields
    "one_device": {"mesh.data": 1},
    "expert4_data2": {"mesh.data": 2, "mesh.expert": 4},
    "expert2_fsdp2_tensor2": {"mesh.data": 1, "mesh.expert": 2, "mesh.fsdp": 2,
                              "mesh.tensor": 2},
}
# Every mesh with each transport, named "<mesh>:<transport>" (the 1-device run is the reference).
MESHES = {"one_device": SHAPES["one_device"],
          **{f"{name}:{transport}": {**fields, "model.moe.expert_parallel": transport}
             for name, fields in SHAPES.items() if name != "one_device"
             for transport in ("shard_map", "constraints")}}


def _layout(leaf):
    return {"spec": [list(a) if isinstance(a, tuple) else a for a in leaf.sharding.spec],
            "shard": list(leaf.sharding.shard_shape(leaf.shape)),
            "devices": len(leaf.sharding.device_set)}


FAST = ("one_device", "expert4_data2:shard_map")
SLOW = ("one_device", "expert4_data2:constraints", "expert2_fsdp2_tensor2:shard_map",
        "expert2_fsdp2_tensor2:constraints")


def layer_check(name):
    """Max relative differences of one MoE layer's output, aux loss and gradients on a mesh
    (a MESHES name) against the same layer applied bare, i.e. on one device."""
    import flax.linen as nn
    import jax
    from lmjax.model import aux
    from lmjax.model.mlp import MLP
    from lmjax.parallel import mesh as mesh_lib, shardings
    from lmjax.parallel.context import context
    cfg = helpers.tiny_config({**MOE, **MESHES[name]})
    mlp = MLP(cfg.model)
    rng = np.random.default_rng(0)
    t = cfg.train
    x = rng.normal(size=(t.batch_size, t.seq_len, cfg.model.d_model)).astype(np.float32)
    r = rng.normal(size=x.shape).astype(np.float32)
    boxed = jax.eval_shape(mlp.init, jax.random.key(0), x)["params"]
    params = helpers.randomize(helpers.strip_boxes(boxed), seed=1, std=0.2)

    def value_and_grads(p, x):
        def loss(p, x):
            y, variables = mlp.apply({"params": p}, x, mutable=[aux.COLLECTION])
            return (y * r).sum() + aux.collect(variables)[0]
        return jax.value_and_grad(loss, argnums=(0, 1))(p, x)

    reference = jax.jit(value_and_grads)(params, x)
    mesh, rules = mesh_lib.make_mesh(cfg), shardings.rules(cfg)
    with context(mesh, rules):
        param_sh = shardings.logical_to_sharding(boxed, mesh, rules)
        x_sh = jax.sharding.NamedSharding(mesh, nn.logical_to_mesh_axes(("batch", None, None)))
        got = jax.jit(value_and_grads, in_shardings=(param_sh, x_sh))(
            jax.device_put(params, param_sh), jax.device_put(x, x_sh))
    rel = lambda a, b: float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
    return {"loss": rel(got[0], reference[0]),
            "grads": max(rel(np.asarray(a), np.asarray(b))
                         for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(reference[1]))),
            "gate_grad_axis": got[1][0]["expert_gate"].sharding.spec[0]}


def run(checkpoint_dir, names):
    import jax
    from lmjax.train import checkpoint
    from lmjax.train.state import abstract_params
    assert jax.device_count() == 8
    batches = [helpers.random_tokens(helpers.tiny_config(MOE), seed=i % 4) for i in range(STEPS)]
    params, results, states = None, {}, {}
    for name in names:
        mesh = MESHES[name]
        cfg = helpers.tiny_config({**MOE, **mesh})
        parts = helpers.TrainParts(cfg, jax.devices()[:1] if name == "one_device" else None)
        if params is None:  # the same weights on every mesh
            shapes = helpers.strip_boxes(abstract_params(parts.model, cfg))
            params = helpers.randomize(shapes, seed=0, std=0.05)
        state = parts.init(params)
        losses, balance = [], []
        for batch in batches:
            state, metrics = parts.step(state, batch)
            losses.append(float(metrics["train_loss"]))
            balance.append(float(metrics["moe/balance_loss"]))
        mlp = state.params["layer_0"]["mlp"]
        results[name] = {"losses": losses, "balance": balance, "mesh": dict(parts.mesh.shape),
                         "gate": _layout(mlp["expert_gate"]), "down": _layout(mlp["expert_down"]),
                         "router": _layout(mlp["router"])}
        states[name] = (parts, state)

    if "expert4_data2:shard_map" not in names:
        print("RESULTS " + json.dumps(results))
        return
    results["layer:constraints"] = layer_check("expert4_data2:constraints")
    # Saved from expert=4 x data=2, restored onto 1 device: same values, same next step.
    parts8, state8 = states["expert4_data2:shard_map"]
    manager = checkpoint.make_manager(checkpoint_dir)
    with parts8.context():
        checkpoint.save(manager, STEPS, state8, {}, {}, 0)
    manager.wait_until_finished()
    parts1, _ = states["one_device"]
    with parts1.context():
        step, restored, _ = checkpoint.restore_latest(checkpoint.make_manager(checkpoint_dir),
                                                      parts1.built.abstract_state())
    pairs = zip(jax.tree.leaves(jax.device_get(state8)), jax.tree.leaves(jax.device_get(restored)))
    results["restored"] = {
        "step": step, "identical": all(np.array_equal(a, b) for a, b in pairs),
        "devices": len(jax.tree.leaves(restored.params)[0].sharding.device_set),
        "next_loss_8": float(parts8.step(state8, batches[0])[1]["train_loss"]),
        "next_loss_1": float(parts1.step(restored, batches[0])[1]["train_loss"])}
    print("RESULTS " + json.dumps(results))


_RESULTS = {}


def results_for(group, tmp_path_factory):
    if group not in _RESULTS:
        env = helpers.cli_env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__),
                               str(tmp_path_factory.mktemp("moe_ckpt")), *group],
                              cwd=helpers.REPO, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")][-1]
        _RESULTS[group] = json.loads(line[len("RESULTS "):])
    return _RESULTS[group]


@pytest.fixture
def results(tmp_path_factory):
    return results_for(FAST, tmp_path_factory)


def _check_losses(results, mesh):
    reference = results["one_device"]["losses"]
    assert reference[-1] < reference[0] - 0.1  # it trains
    np.testing.assert_allclose(results[mesh]["losses"], reference, rtol=1e-5, atol=0)
    np.testing.assert_allclose(results[mesh]["balance"], results["one_device"]["balance"],
                               rtol=1e-5)


def _check_expert4_data2(results, transport):
    _check_losses(results, f"expert4_data2:{transport}")
    r = results[f"expert4_data2:{transport}"]
    assert r["mesh"] == {"data": 2, "expert": 4, "fsdp": 1, "tensor": 1}
    # (experts, embed, mlp) = (8, 32, 32): 2 experts per device, replicated over data.
    assert r["gate"]["spec"][0] == "expert" and r["gate"]["shard"] == [2, 32, 32]
    assert r["down"]["shard"] == [2, 32, 32] and r["gate"]["devices"] == 8


@pytest.mark.slow  # an 8-device process of 1-2 CPU-minutes; CI's 8-device check: test_sharding
def test_expert4_data2_losses_equal_one_device(results):
    _check_expert4_data2(results, "shard_map")


@pytest.mark.slow  # an 8-device process of 1-2 CPU-minutes; CI's 8-device check: test_sharding
def test_expert4_data2_constraints_layer_output_and_grads_equal_one_device(results):
    r = results["layer:constraints"]
    assert r["loss"] < 1e-5 and r["grads"] < 1e-5, r
    assert r["gate_grad_axis"] == "expert", r  # the expert weights' gradient stays split


@pytest.mark.slow
def test_expert4_data2_constraints_losses_equal_one_device(tmp_path_factory):
    _check_expert4_data2(results_for(SLOW, tmp_path_factory), "constraints")


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["shard_map", "constraints"])
def test_expert2_fsdp2_tensor2_losses_equal_one_device_and_shard_every_axis(tmp_path_factory,
                                                                           transport):
    results = results_for(SLOW, tmp_path_factory)
    name = f"expert2_fsdp2_tensor2:{transport}"
    _check_losses(results, name)
    r = results[name]
    assert r["gate"]["spec"] == ["expert", "fsdp", "tensor"] and r["gate"]["shard"] == [4, 16, 16]
    assert r["down"]["spec"] == ["expert", "tensor", "fsdp"] and r["down"]["shard"] == [4, 16, 16]
    assert r["router"]["shard"] == [16, 8] and r["gate"]["devices"] == 8


@pytest.mark.slow  # an 8-device process of 1-2 CPU-minutes; CI's 8-device check: test_sharding
def test_expert4_checkpoint_restores_onto_one_device(results):
    r = results["restored"]
    assert r["step"] == STEPS and r["identical"] and r["devices"] == 1
    np.testing.assert_allclose(r["next_loss_1"], r["next_loss_8"], rtol=1e-5)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests import helpers
    run(sys.argv[1], sys.argv[2:])
