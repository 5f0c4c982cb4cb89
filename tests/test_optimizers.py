"""Every optimizer by name: decay mask, clipping, gradient accumulation, state sharded like the
parameters (8 fake devices against 1) and bit-exact checkpoint resume."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

if __name__ != "__main__":
    import jax
    from tests import helpers
    from lmjax.train.optim import (OPTIMIZERS, decay_mask, hidden_matrices, make_optimizer,
                                   param_axes)

NAMES = ("adamw", "adafactor", "lion", "muon")
FAST = ("lion",)  # the cheapest to compile; the others are slow-marked where a test compiles


def by_name(names=NAMES):
    return [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in names]


def optimizer_config(name, **extra):
    return helpers.tiny_config({"optim.name": name, "optim.lr": 3e-3, "optim.muon_lr": 0.02,
                                "optim.eps": 1e-6, **extra})


def random_params(cfg):
    from lmjax.model import build_model
    from lmjax.train.state import abstract_params
    return helpers.randomize(helpers.unboxed(abstract_params(build_model(cfg.model), cfg)))


def test_registry_lists_every_optimizer():
    assert set(OPTIMIZERS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_zero_gradient_update_is_masked_decoupled_weight_decay(name):
    """With zero gradients each optimizer's update is exactly -lr * weight_decay * param where the
    mask decays, 0 elsewhere; Muon's hidden matrices use muon_lr."""
    cfg = optimizer_config(name, **{"optim.weight_decay": 0.1, "optim.muon_lr": 0.05,
                                    "model.tie_embeddings": False})
    tx, _ = make_optimizer(cfg)
    axes = param_axes(cfg)
    params = random_params(cfg)
    zeros = jax.tree.map(np.zeros_like, params)
    updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(zeros, params)
    mask, hidden = decay_mask(params, False), hidden_matrices(axes)
    lr_of = lambda h: 0.05 if (name == "muon" and h) else 3e-3
    expected = jax.tree.map(lambda p, m, h: -lr_of(h) * 0.1 * p if m else np.zeros_like(p),
                            params, mask, hidden)
    jax.tree.map(lambda u, e: np.testing.assert_allclose(u, e, rtol=1e-5, atol=1e-9),
                 updates, expected)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "muon" else n
                                  for n in NAMES])  # Muon compiles slowly; fast elsewhere
def test_clipping_comes_before_the_optimizer(name):
    """Gradients 1000x the clip norm give the update of the same gradients scaled to the norm."""
    cfg = optimizer_config(name, **{"optim.grad_clip": 0.5})
    tx, _ = make_optimizer(cfg)
    params = random_params(cfg)
    grads = helpers.randomize(params, seed=1)
    norm = float(np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads))))
    huge = jax.tree.map(lambda g: g * (1000 * 0.5 / norm), grads)
    at_norm = jax.tree.map(lambda g: g * (0.5 / norm), grads)
    update = jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7),
                 update(huge, params), update(at_norm, params))


def run_steps(name, accum, batch, steps=2):
    cfg = optimizer_config(name, **{"optim.grad_accum_steps": accum, "model.num_layers": 1,
                                    "optim.eps": 1e-4})
    parts = helpers.TrainParts(cfg)
    state, losses = parts.init(), []
    for _ in range(steps):
        state, metrics = parts.step(state, batch)
        losses.append(float(metrics["train_loss"]))
    return jax.device_get(state.params), losses


@pytest.mark.parametrize("name", by_name(("adafactor", "lion", "muon")))
def test_grad_accumulation_equals_one_big_batch(name):
    batch = helpers.random_tokens(helpers.tiny_config(), seed=3)
    params_1, losses_1 = run_steps(name, 1, batch)
    params_2, losses_2 = run_steps(name, 2, batch)
    np.testing.assert_allclose(losses_2, losses_1, rtol=1e-5)
    # The key bias adds q.b to every score of a query, which softmax ignores: its gradient is 0
    # in exact arithmetic and rounding noise in floats. Lion (sign) and Adafactor (g / |g| with
    # eps 1e-30) turn that noise into full lr steps either way, so it is left out.
    flat = lambda p: np.concatenate([
        np.ravel(x) for path, x in jax.tree_util.tree_flatten_with_path(p)[0]
        if not jax.tree_util.keystr(path).endswith("['key']['bias']")])
    a, b = flat(params_1), flat(params_2)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", by_name())
def test_checkpoint_resume_is_bit_exact(name, tmp_path):
    """2 steps, save, restore into the abstract state, 2 more: identical to 4 straight steps."""
    from lmjax.train import checkpoint
    cfg = optimizer_config(name, **{"model.num_layers": 1})
    parts = helpers.TrainParts(cfg)
    batches = [helpers.random_tokens(cfg, seed=s) for s in range(4)]
    state = parts.init()
    straight = []
    for b in batches:
        state, m = parts.step(state, b)
        straight.append(float(m["train_loss"]))
    final = jax.device_get(state)

    state = parts.init()
    for b in batches[:2]:
        state, _ = parts.step(state, b)
    manager = checkpoint.make_manager(str(tmp_path))
    checkpoint.save(manager, 2, state, {}, {}, tokens_seen=0)
    manager.wait_until_finished()
    del state
    restored, _ = checkpoint.restore_step(manager, 2, parts.built.abstract_state())
    resumed = []
    for b in batches[2:]:
        restored, m = parts.step(restored, b)
        resumed.append(float(m["train_loss"]))
    assert resumed == straight[2:]
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), final)


def run_fsdp(names):
    """In the 8-device process: 3 steps per optimizer on 1 device and on mesh fsdp=8."""
    import jax
    from tests import helpers
    from lmjax.train.state import abstract_params
    results = {}
    for name in names:
        # d_model 128 so that Adafactor factors its second moments (dims >= 128).
        overrides = {"optim.name": name, "optim.lr": 3e-3, "model.d_model": 128,
                     "model.d_ff": 256, "model.vocab_size": 128}
        batch = helpers.random_tokens(helpers.tiny_config(overrides), seed=0)
        params, out = None, {}
        for mesh, devices in (("one", jax.devices()[:1]), ("fsdp8", jax.devices())):
            cfg = helpers.tiny_config({**overrides, "mesh.fsdp": len(devices), "mesh.data": 1})
            parts = helpers.TrainParts(cfg, devices)
            if params is None:
                params = helpers.randomize(helpers.strip_boxes(abstract_params(parts.model, cfg)),
                                           seed=0, std=0.02)
            state = parts.init(params)
            losses = []
            for _ in range(3):
                state, metrics = parts.step(state, batch)
                losses.append(float(metrics["train_loss"]))
            param_specs = {}  # shape -> the specs of the parameters of that shape
            for leaf in jax.tree.leaves(state.params):
                param_specs.setdefault(str(list(leaf.shape)), set()).add(str(leaf.sharding.spec))
            moments = []  # (shape, spec, shard shape) of every optimizer-state array
            for leaf in jax.tree.leaves(state.opt_state):
                if leaf.ndim:
                    moments.append([list(leaf.shape), str(leaf.sharding.spec),
                                    list(leaf.sharding.shard_shape(leaf.shape))])
            out[mesh] = {"losses": losses, "moments": moments,
                         "param_specs": {k: sorted(v) for k, v in param_specs.items()}}
        results[name] = out
    print("RESULTS " + json.dumps(results))


def fsdp_results(names):
    env = helpers.cli_env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *names], cwd=helpers.REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")][-1]
    return json.loads(line[len("RESULTS "):])


def check_fsdp(name, result):
    one, fsdp = result["one"], result["fsdp8"]
    np.testing.assert_allclose(fsdp["losses"], one["losses"], rtol=2e-5)
    assert fsdp["losses"][-1] < fsdp["losses"][0]
    sharded = [m for m in fsdp["moments"] if "fsdp" in m[1]]
    assert sharded, fsdp["moments"]
    for shape, spec, shard in fsdp["moments"]:
        if str(shape) in fsdp["param_specs"]:  # a full moment: a parameter's own sharding
            assert spec in fsdp["param_specs"][str(shape)], (name, shape, spec)
    if name == "adafactor":  # factored rows/columns of the (128, 256) matrices, still sharded
        factored = [m for m in fsdp["moments"] if m[0] in ([128], [256]) and "fsdp" in m[1]]
        assert factored, fsdp["moments"]


@pytest.mark.slow
def test_muon_state_shards_like_params_on_fsdp8():
    check_fsdp("muon", fsdp_results(["muon"])["muon"])


@pytest.mark.slow
def test_adafactor_and_lion_state_shard_like_params_on_fsdp8():
    results = fsdp_results(["adafactor", "lion"])
    for name, result in results.items():
        check_fsdp(name, result)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run_fsdp(sys.argv[1:])
