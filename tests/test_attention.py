"""Causal self-attention (MHA, GQA, MQA; RoPE or none; three backends) against numpy float64."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from lmjax.model.attention import Attention

D, H, K, T, BLOCK = 32, 4, 8, 11, 4  # T is not a multiple of the blockwise backend's block
BACKENDS = ["einsum", "blockwise", "dot_product"]
HEADS = {"mha": 4, "gqa": 2, "mqa": 1}
THETA = 500.0  # small, so even the lowest RoPE frequency turns measurably over 11 positions


def attention(backend, num_kv_heads, positions_kind, block=BLOCK):
    cfg = helpers.model_cfg(d_model=D, num_heads=H, num_kv_heads=num_kv_heads, head_dim=K,
                            use_bias=True, positions=positions_kind, rope_theta=THETA,
                            attention=backend, attention_block=block, init_std=0.02,
                            num_layers=1)
    return Attention(cfg)


def run(module, x, positions, segments=None, seed=0):
    shapes = jax.eval_shape(module.init, jax.random.key(0), x, positions)["params"]
    params = helpers.randomize(helpers.unboxed(shapes), seed, std=0.5)  # peaked softmax
    y = jax.jit(module.apply)({"params": params}, x, positions, segments)
    return helpers.to_numpy(params), np.asarray(y, np.float64)


def inputs(batch=2, length=T, seed=1):
    x = np.random.default_rng(seed).normal(size=(batch, length, D)).astype(np.float32)
    positions = np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length))
    return x, positions


@pytest.mark.parametrize("heads,positions_kind", [("mha", "learned"), ("gqa", "rope"),
                                                  ("mqa", "rope")])
@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_matches_numpy(backend, heads, positions_kind):
    x, positions = inputs()
    p, y = run(attention(backend, HEADS[heads], positions_kind), x, positions)
    assert p["key"]["kernel"].shape == (D, HEADS[heads], K)
    theta = THETA if positions_kind == "rope" else None
    expected = helpers.np_attention(x.astype(np.float64), p, H, HEADS[heads], positions, theta)
    helpers.assert_close(y, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_document_mask_matches_numpy(backend):
    # Three documents per row, boundaries unaligned with the blocks; positions restart per document.
    segments = np.array([[0] * 3 + [1] * 5 + [2] * 3, [0] * 6 + [1] * 1 + [2] * 4], np.int32)
    positions = np.array([list(range(3)) + list(range(5)) + list(range(3)),
                          list(range(6)) + [0] + list(range(4))], np.int32)
    x, _ = inputs()
    p, y = run(attention(backend, 2, "rope"), x, positions, segments)
    expected = helpers.np_attention(x.astype(np.float64), p, H, 2, positions, THETA, segments)
    helpers.assert_close(y, expected)
    no_mask = helpers.np_attention(x.astype(np.float64), p, H, 2, positions, THETA)
    assert np.abs(no_mask - expected).max() > 1e-2  # the mask changed the answer


@pytest.mark.parametrize("length,block", [(12, 4), (3, 4)])
def test_blockwise_equals_einsum_at_any_length(length, block):
    x, positions = inputs(length=length, seed=length)
    _, y_block = run(attention("blockwise", 2, "rope", block), x, positions)
    _, y_full = run(attention("einsum", 2, "rope", block), x, positions)
    helpers.assert_close(y_block, y_full)


def test_rope_reference_is_a_rotation_by_relative_position():
    # Independent check of the numpy RoPE itself: q·k depends only on the position difference.
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(1, 1, 1, 8)), rng.normal(size=(1, 1, 1, 8))

    def dot(pq, pk):
        rq = helpers.np_rope(q, np.array([[pq]]), 100.0)
        rk = helpers.np_rope(k, np.array([[pk]]), 100.0)
        return float((rq * rk).sum())

    assert dot(5, 2) == pytest.approx(dot(13, 10), rel=1e-12)
    assert dot(5, 2) != pytest.approx(dot(5, 3), rel=1e-3)
    assert np.linalg.norm(helpers.np_rope(q, np.array([[7]]), 100.0)) == \
        pytest.approx(np.linalg.norm(q), rel=1e-12)
