"""The whole decoder: numpy reference forward, causality, scan == unrolled, remat invariance."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from lmjax.model import build_model
from lmjax.train.step import cross_entropy

GPT2 = {}  # the tiny defaults: learned positions, LayerNorm, GELU, biases, tied head
LLAMA = {"model.positions": "rope", "model.norm": "rmsnorm", "model.mlp": "swiglu",
         "model.use_bias": False, "model.tie_embeddings": False, "model.num_kv_heads": 2}


def model_and_params(overrides, seed=0, std=0.1):
    cfg = helpers.tiny_config(overrides)
    model = build_model(cfg.model)
    tokens = np.zeros((1, cfg.train.seq_len), np.int32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), tokens)["params"]
    return cfg, model, helpers.randomize(helpers.unboxed(shapes), seed, std)


def restack(params, num_layers):
    """Unrolled layer_i params -> the scanned model's `layers` tree with a leading layer axis."""
    out = {k: v for k, v in params.items() if not k.startswith("layer_")}
    out["layers"] = jax.tree.map(lambda *xs: np.stack(xs),
                                 *[params[f"layer_{i}"] for i in range(num_layers)])
    return out


def tokens_for(cfg, seed=0, batch=2):
    return helpers.random_tokens(cfg, seed, batch)["inputs"]


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_model_matches_numpy(style):
    cfg, model, params = model_and_params(GPT2 if style == "gpt2" else LLAMA)
    assert ("lm_head" in params) == (style == "llama")
    assert ("pos_embed" in params) == (style == "gpt2")
    tokens = tokens_for(cfg)
    logits = jax.jit(model.apply)({"params": params}, tokens)
    assert logits.dtype == jnp.float32 and logits.shape == (2, 16, 64)
    helpers.assert_close(logits, helpers.np_transformer(tokens, helpers.to_numpy(params),
                                                        cfg.model))


def test_document_segments_match_numpy():
    # Two documents packed in each row; positions restart at each document (RoPE).
    cfg, model, params = model_and_params(LLAMA)
    tokens = tokens_for(cfg)
    segments = np.array([[0] * 5 + [1] * 11, [0] * 12 + [1] * 4], np.int32)
    positions = np.array([list(range(5)) + list(range(11)), list(range(12)) + list(range(4))],
                         np.int32)
    logits = jax.jit(model.apply)({"params": params}, tokens, positions, segments)
    expected = helpers.np_transformer(tokens, helpers.to_numpy(params), cfg.model, positions,
                                      segments)
    helpers.assert_close(logits, expected)
    # The second document of row 0 is exactly that document run on its own.
    alone = helpers.np_transformer(tokens[:1, 5:], helpers.to_numpy(params), cfg.model)
    helpers.assert_close(np.asarray(logits)[0, 5:], alone[0])


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_future_tokens_never_change_earlier_logits(positions, scan):
    overrides = {"model.positions": positions, "model.scan_layers": scan}
    if positions == "rope":
        overrides["model.attention"] = "blockwise"  # T=16 over two blocks of 8
        overrides["model.attention_block"] = 8
    cfg, model, params = model_and_params(overrides, std=0.3)
    tokens = tokens_for(cfg, batch=1)
    changed = tokens.copy()
    cut = 9
    changed[0, cut:] = (changed[0, cut:] + 1 + np.arange(16 - cut)) % cfg.model.vocab_size
    logits = np.asarray(jax.jit(model.apply)({"params": params},
                                             np.concatenate([tokens, changed])))
    np.testing.assert_allclose(logits[0, :cut], logits[1, :cut], rtol=0, atol=1e-6)
    assert np.abs(logits[0, cut:] - logits[1, cut:]).min(axis=-1).max() > 1e-4


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_scan_equals_unrolled_with_restacked_weights(style):
    base = GPT2 if style == "gpt2" else LLAMA
    cfg, model, params = model_and_params(base)
    cfg_scan = helpers.tiny_config({**base, "model.scan_layers": True})
    scan_model = build_model(cfg_scan.model)
    tokens = tokens_for(cfg)
    scan_shapes = helpers.unboxed(jax.eval_shape(scan_model.init, jax.random.key(0), tokens)
                                  ["params"])
    stacked = restack(params, cfg.model.num_layers)
    assert jax.tree.structure(scan_shapes) == jax.tree.structure(stacked)
    assert jax.tree.map(lambda x: x.shape, scan_shapes) == jax.tree.map(np.shape, stacked)
    unrolled = jax.jit(model.apply)({"params": params}, tokens)
    scanned = jax.jit(scan_model.apply)({"params": stacked}, tokens)
    helpers.assert_close(scanned, unrolled)


def loss_and_grads(overrides, params, batch):
    cfg = helpers.tiny_config(overrides)
    model = build_model(cfg.model)

    def loss_fn(p):
        total, count = cross_entropy(model.apply({"params": p}, batch["inputs"]),
                                     batch["targets"])
        return total / count

    jaxpr = str(jax.make_jaxpr(loss_fn)(params))
    # The policy really wraps the blocks (jax's rematerialisation primitive is named remat).
    assert ("remat" in jaxpr) == (cfg.model.remat_policy != "none")
    return jax.jit(jax.value_and_grad(loss_fn))(params)


@pytest.mark.parametrize("scan", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_remat_policies_give_the_same_loss_and_grads(scan):
    policies = ("full", "dots_saveable")
    cfg, _, params = model_and_params(LLAMA)
    if scan:
        params = restack(params, cfg.model.num_layers)
    batch = helpers.random_tokens(cfg, batch=2)
    results = {policy: loss_and_grads({**LLAMA, "model.scan_layers": scan,
                                       "model.remat_policy": policy}, params, batch)
               for policy in ("none",) + policies}
    loss, grads = results["none"]
    assert np.isfinite(float(loss))
    for policy in policies:
        other_loss, other_grads = results[policy]
        assert float(other_loss) == pytest.approx(float(loss), rel=1e-6)
        jax.tree.map(lambda a, b: helpers.assert_close(a, b, tol=1e-5), other_grads, grads)

