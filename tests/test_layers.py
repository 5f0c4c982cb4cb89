"""Norms, the dense projection and the embedding against numpy float64 references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from lmjax.model.layers import Embed, Norm, Projection

def init_apply(module, x, seed=0):
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
    params = helpers.randomize(helpers.unboxed(shapes), seed)
    return params, np.asarray(jax.jit(module.apply)({"params": params}, x), np.float64)


@pytest.mark.parametrize("kind,use_bias", [("layernorm", True), ("layernorm", False),
                                           ("rmsnorm", False)])
def test_norm_matches_numpy(kind, use_bias):
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(2, 5, 24)).astype(np.float32)
    norm = Norm(helpers.model_cfg(norm=kind, norm_eps=1e-5, use_bias=use_bias))
    params, y = init_apply(norm, x)
    p = helpers.to_numpy(params)
    assert set(p) == ({"scale", "bias"} if use_bias and kind == "layernorm" else {"scale"})
    x64 = x.astype(np.float64)
    if kind == "layernorm":
        expected = helpers.np_layernorm(x64, p["scale"], p.get("bias"), 1e-5)
    else:
        expected = helpers.np_rmsnorm(x64, p["scale"], 1e-5)
    helpers.assert_close(y, expected)


def test_rmsnorm_differs_from_layernorm_on_uncentred_input():
    # The two references must not coincide on the test input, or the test above proves nothing.
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(4, 24))
    ones = np.ones(24)
    assert not np.allclose(helpers.np_rmsnorm(x, ones, 1e-5),
                           helpers.np_layernorm(x, ones, None, 1e-5), atol=1e-2)


def test_norm_computes_in_float32_for_bfloat16_inputs():
    x = np.random.default_rng(2).normal(100.0, 0.5, size=(3, 64)).astype(jnp.bfloat16)
    norm = Norm(helpers.model_cfg(norm="layernorm", norm_eps=1e-5, use_bias=False,
                                  dtype="bfloat16"))
    params, y = init_apply(norm, x)
    p_scale = helpers.to_numpy(params)["scale"]
    expected = helpers.np_layernorm(np.asarray(x, np.float64), p_scale, None, 1e-5)
    # bfloat16 output has ~3 significant digits; a bfloat16 mean of values near 100 would not.
    np.testing.assert_allclose(y, expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("in_shape,out_shape", [((12,), (20,)), ((12,), (3, 4)), ((3, 4), (10,))])
def test_projection_matches_numpy(in_shape, out_shape):
    axes = tuple(f"a{i}" for i in range(len(in_shape) + len(out_shape)))
    proj = Projection(in_shape, out_shape, axes, True, 0.02, jnp.float32, jnp.float32)
    x = np.random.default_rng(3).normal(size=(2, 5) + in_shape).astype(np.float32)
    params, y = init_apply(proj, x)
    expected = helpers.np_dense(x.astype(np.float64), helpers.to_numpy(params), len(in_shape))
    assert y.shape == (2, 5) + out_shape
    helpers.assert_close(y, expected)


def test_embedding_lookup_and_tied_head():
    embed = Embed(helpers.model_cfg(vocab_size=50, d_model=16, init_std=0.02))
    tokens = np.random.default_rng(4).integers(0, 50, size=(2, 7))
    params = helpers.randomize(helpers.unboxed(
        jax.eval_shape(embed.init, jax.random.key(0), tokens)["params"]))
    table = helpers.to_numpy(params)["embedding"]
    x = np.asarray(embed.apply({"params": params}, tokens), np.float64)
    helpers.assert_close(x, table[tokens])
    logits = np.asarray(embed.apply({"params": params}, x.astype(np.float32),
                                    method=Embed.attend), np.float64)
    helpers.assert_close(logits, x @ table.T)
