"""μP: the coordinate check of Tensor Programs V, and what the parametrization changes.

Coordinate check: the same model at widths 64 ... 1024 takes a few Adam steps at one learning
rate; the RMS of each layer's activations and of the logits is then measured. Under mup it stays
O(1) as the width grows (slope of log RMS against log width near 0); under sp the logits grow
with width. Reference: Yang et al. 2022, section 7 and figure 5.
"""
import math

import jax
import numpy as np
import pytest

from tests import helpers
from lmjax.model import build_model
from lmjax.train.optim import hidden_matrices, make_optimizer, param_axes

COORD_WIDTHS = (64, 128, 256, 512, 1024)


def coord_config(width, param, lr=1e-2):
    return helpers.tiny_config({
        "model.num_layers": 2, "model.d_model": width, "model.num_heads": 4,
        "model.d_ff": 4 * width, "model.parametrization": param, "model.mup_base_width": 64,
        "model.tie_embeddings": False, "train.batch_size": 4, "optim.lr": lr,
        "optim.grad_clip": 0.0, "optim.weight_decay": 0.0})


def activation_rms(width, param, steps=3):
    """{activation name: RMS over its coordinates} after `steps` Adam steps on a fixed batch."""
    cfg = coord_config(width, param)
    parts = helpers.TrainParts(cfg)
    state = parts.built.init_state()
    batch = helpers.random_tokens(cfg, seed=0)
    for _ in range(steps):
        state, _ = parts.step(state, batch)
    params = jax.device_get(state.params)
    _, inter = parts.model.apply({"params": params}, batch["inputs"], capture_intermediates=True,
                                 mutable=["intermediates"])
    inter = inter["intermediates"]
    rms = lambda x: float(np.sqrt(np.mean(np.square(np.asarray(x, np.float64)))))
    out = {"embed": rms(inter["embed"]["__call__"][0]),
           "logits": rms(inter["__call__"][0])}
    for i in range(cfg.model.num_layers):
        layer = inter[f"layer_{i}"]
        out[f"layer_{i}/attn"] = rms(layer["attn"]["__call__"][0])
        out[f"layer_{i}/mlp"] = rms(layer["mlp"]["__call__"][0])
        out[f"layer_{i}"] = rms(layer["__call__"][0][0])
    return out


def slopes(widths, param):
    """Least-squares slope of log RMS against log width, per activation."""
    table = [activation_rms(w, param) for w in widths]
    x = np.log(np.asarray(widths, np.float64))
    return {name: float(np.polyfit(x, np.log([row[name] for row in table]), 1)[0])
            for name in table[0]}, table


def check_coordinates(widths):
    mup, mup_table = slopes(widths, "mup")
    sp, sp_table = slopes(widths, "sp")
    report = f"mup slopes {mup}\nsp slopes {sp}\nmup {mup_table}\nsp {sp_table}"
    # mup: every activation's RMS is O(1) in width. Measured at widths 64 and 256 (3 steps):
    # slopes between -0.34 and +0.17 under mup, +0.84 (logits) to +1.9 (attention) under sp.
    assert all(abs(s) < 0.4 for s in mup.values()), report
    # sp: after a few Adam steps the logits grow about linearly with width, and so do the
    # blocks' outputs (the update to each hidden matrix moves its output by O(width)).
    assert sp["logits"] > 0.6, report
    assert min(sp[k] for k in sp if k.startswith("layer_")) > 0.8, report


@pytest.mark.slow
def test_coordinate_check_64_to_1024():
    check_coordinates(COORD_WIDTHS)


MUP = {"model.parametrization": "mup", "model.d_model": 64, "model.num_heads": 4,
       "model.d_ff": 128, "model.mup_base_width": 16}


@pytest.mark.parametrize("tied", [True, False])
def test_mup_forward_matches_numpy(tied):
    """1/K attention (with the base head dim's constant) and logits times base/width = 1/4."""
    cfg = helpers.tiny_config({**MUP, "model.tie_embeddings": tied})
    model = build_model(cfg.model)
    tokens = helpers.random_tokens(cfg, 0, 2)["inputs"]
    shapes = jax.eval_shape(model.init, jax.random.key(0), tokens)["params"]
    params = helpers.randomize(helpers.unboxed(shapes), 0, 0.1)
    logits = jax.jit(model.apply)({"params": params}, tokens)
    expected = helpers.np_transformer(tokens, helpers.to_numpy(params), cfg.model)
    helpers.assert_close(logits, expected)
    assert helpers.np_mup_factors(cfg.model) == (math.sqrt(4) / 16, 0.25)


def test_mup_init_and_learning_rates_scale_hidden_matrices_only():
    """Width 64 over base 16 (m = 4): hidden kernels start at std/2 and step at lr/4; the
    embedding, norms and biases keep sp's init and step."""
    grads_seed = np.random.default_rng(0)
    results = {}
    for param in ("sp", "mup"):
        cfg = helpers.tiny_config({**MUP, "model.parametrization": param, "model.init_std": 0.1,
                                   "optim.weight_decay": 0.0, "optim.grad_clip": 0.0})
        model = build_model(cfg.model)
        init = helpers.unboxed(model.init(jax.random.key(0), np.zeros((1, 16), np.int32)))
        tx, _ = make_optimizer(cfg)
        params = init["params"]
        if param == "sp":
            grads = jax.tree.map(lambda p: grads_seed.normal(size=p.shape).astype(p.dtype), params)
        updates, _ = tx.update(grads, tx.init(params), params)
        results[param] = (params, jax.device_get(updates))
    (sp_params, sp_updates), (mup_params, mup_updates) = results["sp"], results["mup"]
    hidden = hidden_matrices(param_axes(helpers.tiny_config(MUP)))
    hidden_paths = {"/".join(k.key for k in path) for path, h in
                    jax.tree_util.tree_flatten_with_path(hidden)[0] if h}
    assert hidden_paths == {f"layer_{i}/{m}/kernel" for i in range(2) for m in
                            ("attn/query", "attn/key", "attn/value", "attn/out", "mlp/fc_in",
                             "mlp/fc_out")}
    flat = lambda tree: {"/".join(k.key for k in path): np.asarray(v) for path, v in
                         jax.tree_util.tree_flatten_with_path(tree)[0]}
    sp_p, mup_p, sp_u, mup_u = map(flat, (sp_params, mup_params, sp_updates, mup_updates))
    for name in sp_u:
        factor = 0.25 if name in hidden_paths else 1.0
        np.testing.assert_allclose(mup_u[name], factor * sp_u[name], rtol=1e-6, atol=1e-12)
        if name.endswith("kernel") or name.endswith("embedding"):
            std_ratio = mup_p[name].std() / sp_p[name].std()
            assert std_ratio == pytest.approx(0.5 if name in hidden_paths else 1.0, rel=0.05), name
