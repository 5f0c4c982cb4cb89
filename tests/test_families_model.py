"""The current open families' model features against a float64 numpy decoder (tests/np_reference):
RoPE scaling, q/k/v biases, QK-norm, decoupled head_dim, query_pre_attn_scalar, soft-capping,
sliding-window layers (all, alternating, explicit), local RoPE theta, Gemma's norms and GeGLU."""
import jax
import numpy as np
import pytest

from lmjax.config import ConfigError
from lmjax.model import build_model
from lmjax.model.attention import Attention
from tests import helpers
from tests.np_reference import np_decoder

T, WINDOW = 24, 8  # sequences longer than the window

COMMON = dict(num_layers=2, d_model=32, num_heads=4, d_ff=64, vocab_size=128, max_seq_len=64,
              positions="rope", norm="rmsnorm", norm_eps=1e-6, mlp="swiglu", use_bias=False,
              tie_embeddings=False, init_std=0.02)
FAMILIES = {
    "llama3": dict(num_kv_heads=2, rope_theta=500.0, rope_scaling="llama3",
                   rope_scaling_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                   rope_original_max_seq_len=32),
    "linear_rope": dict(rope_theta=100.0, rope_scaling="linear", rope_scaling_factor=4.0),
    "qwen2": dict(num_kv_heads=2, qkv_bias=True, rope_theta=1000.0, tie_embeddings=True),
    "qwen3": dict(num_kv_heads=2, head_dim=16, qk_norm=True, rope_theta=1000.0),
    "mistral": dict(num_kv_heads=2, sliding_window=WINDOW, local_layers="all"),
    "gemma2": dict(num_kv_heads=2, head_dim=16, norm="gemma_rmsnorm", mlp="geglu",
                   post_norms=True, scale_embeddings=True, tie_embeddings=True,
                   query_pre_attn_scalar=24.0, attn_logit_softcap=5.0,
                   final_logit_softcap=3.0, sliding_window=WINDOW, local_layers="alternate"),
    "gemma3": dict(num_layers=3, num_kv_heads=1, head_dim=16, norm="gemma_rmsnorm",
                   mlp="geglu", post_norms=True, scale_embeddings=True, tie_embeddings=True,
                   qk_norm=True, query_pre_attn_scalar=16.0, sliding_window=WINDOW,
                   local_layers="LGL", rope_theta=10000.0, rope_local_theta=100.0,
                   rope_scaling="linear", rope_scaling_factor=2.0),
}


def family_cfg(name, **extra):
    return helpers.model_cfg(**{**COMMON, **FAMILIES[name], **extra})


def random_params(model, seed=0, std=0.3):
    tokens = np.zeros((1, T), np.int32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), tokens)["params"]
    return helpers.randomize(helpers.unboxed(shapes), seed, std=std)


def tokens(batch=2, seed=1):
    return np.random.default_rng(seed).integers(0, 128, size=(batch, T)).astype(np.int32)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_matches_numpy(family):
    mc = family_cfg(family, attention="blockwise", attention_block=8)
    model = build_model(mc)
    params = random_params(model)
    x = tokens()
    y = np.asarray(jax.jit(model.apply)({"params": params}, x))
    helpers.assert_close(y, np_decoder(x, helpers.to_numpy(params), mc))


def test_mixed_local_layers_scan_as_one_stack():
    """Scanned Gemma 3 layers (L, G, L) take their flag as a scanned input: same logits."""
    unrolled = family_cfg("gemma3", attention="blockwise", attention_block=8)
    scanned = family_cfg("gemma3", attention="blockwise", attention_block=8, scan_layers=True)
    params = random_params(build_model(unrolled), seed=2)
    stacked = dict(params)
    layers = [stacked.pop(f"layer_{i}") for i in range(3)]
    stacked["layers"] = jax.tree.map(lambda *xs: np.stack(xs), *layers)
    x = tokens(seed=3)
    a = build_model(unrolled).apply({"params": params}, x)
    b = build_model(scanned).apply({"params": stacked}, x)
    helpers.assert_close(b, a)


def _attention(backend, window, segments=None, seed=0):
    mc = family_cfg("gemma2", attention=backend, attention_block=5, sliding_window=window,
                    attn_logit_softcap=0.0)
    module = Attention(mc)
    x = np.random.default_rng(seed).normal(size=(2, T, 32)).astype(np.float32)
    positions = np.broadcast_to(np.arange(T, dtype=np.int32), (2, T))
    shapes = jax.eval_shape(module.init, jax.random.key(0), x, positions)["params"]
    params = helpers.randomize(helpers.unboxed(shapes), seed, std=0.5)
    apply = jax.jit(module.apply, static_argnums=4)
    return np.asarray(apply({"params": params}, x, positions, segments, True))


@pytest.mark.parametrize("backend", ["blockwise", "dot_product"])
def test_window_in_every_backend(backend):
    segments = np.array([[0] * 10 + [1] * 14, [0] * 3 + [1] * 21], np.int32)
    for seg in (None, segments):
        helpers.assert_close(_attention(backend, WINDOW, seg), _attention("einsum", WINDOW, seg))
    # The window matters: a global layer gives different outputs.
    assert np.abs(_attention("einsum", WINDOW) - _attention("einsum", 0)).max() > 1e-3


def test_blockwise_skips_blocks_outside_the_window():
    """Compiled FLOPs: a window of 2 blocks at T = 16 blocks costs ~(2 + 1)/(16/2 + 1/2) of
    the causal blocks (query block i sees blocks i-2..i instead of 0..i)."""
    import jax.numpy as jnp
    from lmjax.model.attention import blockwise_attention
    mc = helpers.model_cfg(attention_block=16, num_heads=2, d_model=32)
    q = jax.ShapeDtypeStruct((1, 256, 2, 16), jnp.float32)

    def flops(window):
        fn = jax.jit(lambda q, k, v: blockwise_attention(q, k, v, None, mc, window))
        return fn.lower(q, q, q).compile().cost_analysis()["flops"]

    ratio = flops(32) / flops(0)
    blocks = 16
    expected = (blocks * 3 - 3) / (blocks * (blocks + 1) / 2)  # key blocks visited, per query
    assert ratio == pytest.approx(expected, rel=0.25), (ratio, expected)


@pytest.mark.parametrize("field,value,message", [
    ("local_layers", "LLG", "one letter per layer"),
    ("rope_scaling", "yarn", "model.rope_scaling='yarn': must be one of"),
    ("attention", "dot_product", "cannot soft-cap"),
    ("sliding_window", -1, "must be >= 0"),
])
def test_bad_family_fields_name_the_field(field, value, message):
    from lmjax import validation
    cfg = helpers.tiny_config({f"model.{k}": v for k, v in FAMILIES["gemma2"].items()})
    cfg.model[field] = value
    with pytest.raises(ConfigError, match=message):
        validation.validate(cfg, 1)
