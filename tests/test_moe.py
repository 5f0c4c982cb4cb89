"""The MoE layer against numpy float64 references: routing, combine weights, auxiliary losses,
dropless dispatch == every expert on every token masked by the routing, capacity dropping."""
import math

import jax
import numpy as np
import pytest

from tests import helpers
from lmjax.model import aux
from lmjax.model.mlp import MLP

E, K, D, F, B, T = 8, 2, 16, 24, 2, 12


def moe_cfg(**moe):
    cfg = helpers.model_cfg(d_model=D, d_ff=F, mlp="moe", use_bias=False, num_layers=1)
    with cfg.unlocked():
        cfg.moe.num_experts, cfg.moe.top_k = E, K
        cfg.moe.aux_loss_coef, cfg.moe.z_loss_coef = 0.01, 0.001
        for name, value in moe.items():
            cfg.moe[name] = value
    return cfg


def unbalanced(cfg, seed=0):
    """Parameters and inputs whose routing piles onto experts 0 and 1 and starves others."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(B, T, D)) + 1.0).astype(np.float32)  # a shared direction: mean 1
    mlp = MLP(cfg)
    shapes = jax.eval_shape(mlp.init, jax.random.key(0), x)["params"]
    params = helpers.randomize(helpers.unboxed(shapes), seed)
    router = 0.3 * rng.normal(size=(D, E))
    router[:, 0] += 0.5  # tokens along the mean direction prefer 0, then 1
    router[:, 1] += 0.35
    router[:, 2:5] -= 0.6  # 2..4 rarely win
    params["router"] = router.astype(np.float32)
    return mlp, params, x


def apply(mlp, params, x):
    y, variables = jax.jit(lambda p, x: mlp.apply({"params": p}, x, mutable=[aux.COLLECTION]))(
        params, x)
    loss, metrics = aux.collect(variables)
    return np.asarray(y, np.float64), float(loss), {k: float(v) for k, v in metrics.items()}


def np_route(x, router, renormalize):
    logits = x.reshape(-1, D) @ router
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    experts = np.argsort(-p, axis=-1, kind="stable")[:, :K]
    weights = np.take_along_axis(p, experts, -1)
    if renormalize:
        weights = weights / weights.sum(-1, keepdims=True)
    return logits, p, experts, weights


def np_expert(x, p, e):
    h = helpers.np_silu(x @ p["expert_gate"][e]) * (x @ p["expert_up"][e])
    return h @ p["expert_down"][e]


def np_dense_masked(x, p, experts, weights, keep=None):
    """Every expert on every token; each token keeps the outputs of its chosen experts."""
    xf = x.reshape(-1, D)
    all_out = np.stack([np_expert(xf, p, e) for e in range(E)], 1)  # N, E, D
    gate = np.zeros((xf.shape[0], E))
    for j in range(K):
        w = weights[:, j] if keep is None else weights[:, j] * keep[:, j]
        np.add.at(gate, (np.arange(xf.shape[0]), experts[:, j]), w)
    return np.einsum("ne,ned->nd", gate, all_out).reshape(x.shape)


def np_losses(logits, p, experts):
    N = logits.shape[0]
    counts = np.bincount(experts.reshape(-1), minlength=E)
    balance = E * np.sum(counts / N * p.mean(0))
    m = logits.max(-1)
    z = np.mean((m + np.log(np.exp(logits - m[:, None]).sum(-1))) ** 2)
    entropy = -np.mean(np.sum(p * np.log(p), -1))
    return balance, z, entropy, counts


@pytest.mark.parametrize("renormalize", [True, False])
def test_routing_losses_and_dropless_output_match_numpy(renormalize):
    cfg = moe_cfg(renormalize=renormalize)
    mlp, params, x = unbalanced(cfg)
    p = helpers.to_numpy(params)
    xd = x.astype(np.float64)
    logits, probs, experts, weights = np_route(xd, p["router"], renormalize)
    balance, z, entropy, counts = np_losses(logits, probs, experts)
    # The routing really is unbalanced: experts with no token at all, and a crowded one.
    assert (counts == 0).sum() >= 2 and counts.max() >= 3 * B * T * K / E
    np.testing.assert_array_equal(np.sort(np.asarray(
        jax.lax.top_k(jax.nn.softmax(x.reshape(-1, D) @ params["router"]), K)[1]), -1),
        np.sort(experts, -1))

    y, loss, metrics = apply(mlp, params, x)
    helpers.assert_close(y, np_dense_masked(xd, p, experts, weights))
    np.testing.assert_allclose(metrics["moe/balance_loss"], balance, rtol=1e-5)
    np.testing.assert_allclose(metrics["moe/z_loss"], z, rtol=1e-5)
    np.testing.assert_allclose(loss, 0.01 * balance + 0.001 * z, rtol=1e-5)
    np.testing.assert_allclose(metrics["moe/router_entropy"], entropy, rtol=1e-5)
    np.testing.assert_allclose(metrics["moe/expert_fraction_max"], counts.max() / counts.sum())
    assert metrics["moe/expert_fraction_min"] == 0.0 and metrics["moe/dropped_fraction"] == 0.0


def np_capacity_keep(experts, capacity):
    """Choice-major, token-order slot filling: keep[n, j] = assignment got a slot."""
    N = experts.shape[0]
    used, keep = np.zeros(E, int), np.zeros((N, K), bool)
    for j in range(K):
        for n in range(N):
            e = experts[n, j]
            if used[e] < capacity:
                keep[n, j], used[e] = True, used[e] + 1
    return keep


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_capacity_mode_drops_overflow_and_counts_it(factor):
    cfg = moe_cfg(dispatch="capacity", capacity_factor=factor)
    mlp, params, x = unbalanced(cfg, seed=1)
    p = helpers.to_numpy(params)
    xd = x.astype(np.float64)
    _, _, experts, weights = np_route(xd, p["router"], True)
    keep = np_capacity_keep(experts, math.ceil(factor * B * T * K / E))
    assert 0 < (~keep).sum() < keep.size
    y, _, metrics = apply(mlp, params, x)
    helpers.assert_close(y, np_dense_masked(xd, p, experts, weights, keep))
    np.testing.assert_allclose(metrics["moe/dropped_fraction"], (~keep).mean(), rtol=1e-6)


def test_capacity_with_room_for_every_token_equals_dropless():
    mlp, params, x = unbalanced(moe_cfg())
    y_dropless, _, _ = apply(mlp, params, x)
    roomy = MLP(moe_cfg(dispatch="capacity", capacity_factor=float(E)))
    y_capacity, _, metrics = apply(roomy, params, x)
    helpers.assert_close(y_capacity, y_dropless)
    assert metrics["moe/dropped_fraction"] == 0.0


def test_shared_expert_with_gate_adds_to_the_routed_output():
    cfg = moe_cfg(shared_d_ff=20, shared_gate=True)
    mlp, params, x = unbalanced(cfg, seed=2)
    p = helpers.to_numpy(params)
    xd = x.astype(np.float64)
    _, _, experts, weights = np_route(xd, p["router"], True)
    shared = helpers.np_mlp(xd, {"gate": p["shared_gate"], "up": p["shared_up"],
                                 "down": p["shared_down"]}, "swiglu")
    gate = 1 / (1 + np.exp(-helpers.np_dense(xd, p["shared_expert_gate"])))
    y, _, _ = apply(mlp, params, x)
    helpers.assert_close(y, np_dense_masked(xd, p, experts, weights) + gate * shared)


@pytest.mark.slow
def test_scanned_remat_moe_reports_the_same_losses_and_metrics_as_unrolled():
    """Auxiliary outputs leave the model through scan and remat too (one train step each)."""
    from lmjax.train.state import abstract_params
    from tests.test_model import restack
    overrides = {"model.mlp": "moe", "model.moe.num_experts": 4, "model.moe.d_ff": 16,
                 "model.moe.z_loss_coef": 1e-3}
    unrolled = helpers.TrainParts(helpers.tiny_config(overrides), jax.devices()[:1])
    params = helpers.randomize(helpers.strip_boxes(abstract_params(unrolled.model,
                                                                   unrolled.cfg)), std=0.1)
    scanned = helpers.TrainParts(helpers.tiny_config({**overrides, "model.scan_layers": True,
                                                      "model.remat_policy": "full"}),
                                 jax.devices()[:1])
    batch = helpers.random_tokens(unrolled.cfg)
    _, a = unrolled.step(unrolled.init(params), batch)
    _, b = scanned.step(scanned.init(restack(params, 2)), batch)
    assert set(a) == set(b) and "moe/balance_loss" in a
    for name in a:
        np.testing.assert_allclose(float(b[name]), float(a[name]), rtol=2e-5, err_msg=name)
