"""Feed-forward blocks (GELU tanh, exact GELU, SwiGLU) against numpy float64 references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from lmjax.model.mlp import MLP


@pytest.mark.parametrize("kind", ["gelu", "gelu_exact", "swiglu"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_mlp_matches_numpy(kind, use_bias):
    mlp = MLP(helpers.model_cfg(d_model=16, d_ff=40, mlp=kind, use_bias=use_bias, init_std=0.02))
    x = np.random.default_rng(0).normal(size=(2, 6, 16)).astype(np.float32)
    shapes = jax.eval_shape(mlp.init, jax.random.key(0), x)["params"]
    params = helpers.randomize(helpers.unboxed(shapes))
    y = np.asarray(jax.jit(mlp.apply)({"params": params}, x), np.float64)
    p = helpers.to_numpy(params)
    expected_names = {"gate", "up", "down"} if kind == "swiglu" else {"fc_in", "fc_out"}
    assert set(p) == expected_names
    assert all(("bias" in layer) == use_bias for layer in p.values())
    helpers.assert_close(y, helpers.np_mlp(x.astype(np.float64), p, kind))


def test_gelu_variants_are_distinguishable():
    # tanh-GELU and exact GELU differ by ~1e-3 around |x|~2; the MLP test above uses inputs
    # where the difference is far above its tolerance, so it would catch a swapped activation.
    x = np.linspace(-3, 3, 101)
    assert np.abs(helpers.np_gelu_tanh(x) - helpers.np_gelu_exact(x)).max() > 1e-4
