"""model.dropout and model.z_loss against numpy references; dropout's randomness is a pure
function of (seed, step, layer), and eval runs without it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from lmjax.model import build_model
from lmjax.model import dropout as dropout_lib
from lmjax.train import step as step_lib

RATE = 0.3


def dropout_model(overrides=None):
    cfg = helpers.tiny_config({"model.dropout": RATE, **(overrides or {})})
    model = build_model(cfg.model)
    tokens = helpers.random_tokens(cfg, 0, 2)["inputs"]
    shapes = jax.eval_shape(model.init, jax.random.key(0), tokens)["params"]
    return cfg, model, tokens, helpers.randomize(helpers.unboxed(shapes), 0, 0.1)


def probs_keep(blocks, cfg):
    """The attention probabilities' (B, H, T, T) keep mask, from the (B, G, H/G, queries, keys)
    masks of its query blocks (one for the einsum backend); where no block reaches (keys after
    the query) the probabilities are 0 anyway."""
    blocks = [np.asarray(b) for b in blocks]
    B, H, T = blocks[0].shape[0], cfg.model.num_heads, cfg.train.seq_len
    full, end = np.ones((B, H, T, T), bool), 0
    for block in blocks:
        queries, keys = block.shape[-2:]
        end += queries
        full[:, :, end - queries:end, end - keys:end] = block.reshape(B, H, queries, keys)
    return full


def keep_masks(inter, cfg):
    """The keep masks each dropout drew, read off its captured output (dropped entries are 0)."""
    kept = lambda node: np.asarray(node["__call__"][0]) != 0
    masks = {"embed": kept(inter["Dropout_0"])}
    for i in range(cfg.model.num_layers):
        layer = inter[f"layer_{i}"]
        masks[f"layer_{i}"] = {"probs": probs_keep(layer["attn"]["probs_keep"][0], cfg),
                               "attn": kept(layer["Dropout_0"]), "mlp": kept(layer["Dropout_1"])}
    return masks


@pytest.mark.parametrize("attention,rng", [("einsum", "threefry"), ("blockwise", "threefry"),
                                           ("blockwise", "hash")])
def test_dropout_matches_numpy_at_nanogpts_four_places(attention, rng):
    # blockwise: two query blocks, each drawing its own mask for its probabilities.
    cfg, model, tokens, params = dropout_model({"model.attention": attention,
                                                "model.attention_block": 8,
                                                "model.dropout_rng": rng})
    key = step_lib.dropout_key(0, 3)
    logits, state = jax.jit(lambda p, t: model.apply(
        {"params": p}, t, train=True, rngs={"dropout": key}, capture_intermediates=True,
        mutable=["intermediates"]))(params, tokens)
    masks = keep_masks(state["intermediates"], cfg)
    causal = np.tril(np.ones((16, 16), bool))  # probabilities above the diagonal are 0 anyway
    for i in range(2):
        m = masks[f"layer_{i}"]
        for mask in (masks["embed"], m["attn"], m["mlp"], m["probs"][..., causal]):
            assert abs(1 - mask.mean() - RATE) < 0.05  # the configured fraction is dropped
    np_params = helpers.to_numpy(params)
    helpers.assert_close(logits, helpers.np_transformer(tokens, np_params, cfg.model,
                                                        dropout_masks=masks))
    # Without train (eval, sampling) there is no dropout at all.
    plain = jax.jit(model.apply)({"params": params}, tokens)
    helpers.assert_close(plain, helpers.np_transformer(tokens, np_params, cfg.model))


@pytest.mark.parametrize("rng", ["threefry", "hash"])
def test_dropout_masks_are_a_function_of_seed_step_and_layer(rng):
    cfg, model, tokens, params = dropout_model({"model.dropout_rng": rng})

    @jax.jit
    def masks(seed, step):
        _, state = model.apply({"params": params}, tokens, train=True,
                               rngs={"dropout": step_lib.dropout_key(seed, step)},
                               capture_intermediates=True, mutable=["intermediates"])
        inter = state["intermediates"]
        return jnp.stack([inter[f"layer_{i}"]["Dropout_1"]["__call__"][0] != 0 for i in (0, 1)])

    a, again, other_step, other_seed = (np.asarray(masks(s, t)) for s, t in
                                        ((0, 5), (0, 5), (0, 6), (1, 5)))
    np.testing.assert_array_equal(a, again)
    assert (a != other_step).mean() > 0.2 and (a != other_seed).mean() > 0.2
    assert (a[0] != a[1]).mean() > 0.2  # each layer draws its own mask


def lowbias32_numpy(x):
    x = np.asarray(x, np.uint64) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def hash_bits_numpy(words, shape, starts=(0, 0)):
    """The hash's bits of every index of `shape`, one index at a time in plain integers."""
    seed = 0
    for word in words:
        seed = int(lowbias32_numpy(seed ^ int(word)))
    out = np.empty(shape, np.uint64)
    for index in np.ndindex(*shape):
        lead = 0
        for i, n in zip(index[:-2], shape[:-2]):
            lead = lead * n + i
        h = lowbias32_numpy(seed ^ lead)
        h = lowbias32_numpy(int(h) ^ (index[-2] + starts[0]))
        out[index] = lowbias32_numpy(int(h) ^ (index[-1] + starts[1]))
    return out


def test_hash_bits_match_numpy_and_keep_the_rate():
    key = jax.random.fold_in(jax.random.key(7), 3)
    words = np.asarray(jax.random.key_data(key))
    shape, starts = (2, 3, 4, 5, 6), (8, 2)
    np.testing.assert_array_equal(np.asarray(dropout_lib.hash_bits(key, shape, starts)),
                                  hash_bits_numpy(words, shape, starts))
    # A block's bits are the full array's at the block's offset: einsum and blockwise agree.
    full = np.asarray(dropout_lib.hash_bits(key, (2, 3, 32, 32)))
    block = np.asarray(dropout_lib.hash_bits(key, (2, 3, 8, 16), (16, 4)))
    np.testing.assert_array_equal(block, full[:, :, 16:24, 4:20])
    # The kept fraction is 1 - rate, and neighbours (either axis) are uncorrelated, to within
    # ~4 standard errors of 256k draws.
    keep = np.asarray(dropout_lib.hash_keep(key, (4, 256, 256), 0.2)).astype(np.float64)
    assert abs(keep.mean() - 0.8) < 4 * np.sqrt(0.16 / keep.size)
    for a, b in ((keep[..., 1:], keep[..., :-1]), (keep[:, 1:], keep[:, :-1]),
                 (keep[1:], keep[:-1])):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 4 / np.sqrt(a.size)
    other = np.asarray(dropout_lib.hash_keep(jax.random.fold_in(key, 1), (4, 256, 256), 0.2))
    assert abs(np.corrcoef(keep.ravel(), other.ravel())[0, 1]) < 4 / np.sqrt(keep.size)


def test_hash_dropout_drops_the_same_probabilities_in_einsum_and_blockwise():
    outputs = {}
    for attention in ("einsum", "blockwise"):
        cfg, model, tokens, params = dropout_model({"model.attention": attention,
                                                    "model.attention_block": 8,
                                                    "model.dropout_rng": "hash"})
        logits, state = jax.jit(lambda p, t: model.apply(
            {"params": p}, t, train=True, rngs={"dropout": step_lib.dropout_key(0, 3)},
            capture_intermediates=True, mutable=["intermediates"]))(params, tokens)
        outputs[attention] = (np.asarray(logits), keep_masks(state["intermediates"], cfg))
    (einsum_logits, einsum_masks), (block_logits, block_masks) = outputs.values()
    causal = np.tril(np.ones((16, 16), bool))
    for i in range(2):
        np.testing.assert_array_equal(einsum_masks[f"layer_{i}"]["probs"][..., causal],
                                      block_masks[f"layer_{i}"]["probs"][..., causal])
    np.testing.assert_allclose(block_logits, einsum_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_scanned_layers_draw_their_own_masks():
    """Under scan the two layers' masks differ too: with identical weights in both layers, the
    second layer's MLP output differs from what the first layer's mask would give."""
    cfg, model, tokens, params = dropout_model({"model.scan_layers": True})
    shapes = jax.eval_shape(model.init, jax.random.key(0), tokens)["params"]
    params = helpers.randomize(helpers.unboxed(shapes), 0, 0.1)
    run = jax.jit(lambda p, step: model.apply({"params": p}, tokens, train=True,
                                              rngs={"dropout": step_lib.dropout_key(0, step)}))
    np.testing.assert_array_equal(np.asarray(run(params, 1)), np.asarray(run(params, 1)))
    assert not np.allclose(np.asarray(run(params, 1)), np.asarray(run(params, 2)))


def test_z_loss_adds_log_z_squared_to_the_objective_only():
    """z_loss_sum is sum(logsumexp²); the step's gradient is that of CE + z·mean(log²Z) (numpy
    objective differentiated by jax), and it reports the plain cross-entropy as train_loss."""
    logits = np.random.default_rng(0).normal(size=(2, 3, 5)) * 3
    weights = np.array([[1, 0, 1], [1, 1, 0]], np.float32)
    log_z = np.log(np.exp(logits).sum(-1))
    assert float(step_lib.z_loss_sum(jnp.asarray(logits, jnp.float32), weights)) == \
        pytest.approx(float((log_z ** 2 * weights).sum()), rel=1e-5)

    z = 0.05
    cfg = helpers.tiny_config({"model.z_loss": z, "model.num_layers": 1})
    parts = helpers.TrainParts(cfg)
    state = parts.init()
    batch = helpers.random_tokens(cfg, seed=2)
    params = jax.device_get(state.params)

    def reference(p):
        out = parts.model.apply({"params": p}, batch["inputs"])
        lse = jax.nn.logsumexp(out, -1)
        picked = jnp.take_along_axis(out, batch["targets"][..., None], -1)[..., 0]
        return jnp.mean(lse - picked) + z * jnp.mean(lse ** 2), jnp.mean(lse - picked)

    (_, ce), grads = jax.value_and_grad(reference, has_aux=True)(params)
    _, metrics = parts.step(state, batch)
    grad_norm = float(np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads))))
    assert float(metrics["grad_norm"]) == pytest.approx(grad_norm, rel=1e-4)
    assert float(metrics["train_loss"]) == pytest.approx(float(ce), rel=1e-5)
