"""The optimizer: weight-decay mask, schedules against closed form, gradient accumulation."""
import math

import jax
import numpy as np
import pytest

from tests import helpers
from lmjax import validation
from lmjax.errors import ConfigError
from lmjax.model import build_model
from lmjax.train.optim import decay_mask, make_optimizer, make_schedule as schedule


def param_shapes(overrides):
    cfg = helpers.tiny_config({"model.num_layers": 1, **overrides})
    model = build_model(cfg.model)
    tokens = np.zeros((1, cfg.train.seq_len), np.int32)
    return cfg, helpers.unboxed(jax.eval_shape(model.init, jax.random.key(0), tokens)["params"])


def paths_where(mask_tree, value=True):
    flat = jax.tree_util.tree_flatten_with_path(mask_tree)[0]
    return {"/".join(p.key for p in path) for path, leaf in flat if leaf is value}


LAYER_MATRICES = {f"layer_0/attn/{n}/kernel" for n in ("query", "key", "value", "out")}


@pytest.mark.parametrize("decay_embeddings", [False, True])
def test_decay_mask_gpt2_style(decay_embeddings):
    _, params = param_shapes({})
    decayed = paths_where(decay_mask(params, decay_embeddings))
    expected = LAYER_MATRICES | {"layer_0/mlp/fc_in/kernel", "layer_0/mlp/fc_out/kernel"}
    if decay_embeddings:
        expected |= {"embed/embedding", "pos_embed"}
    assert decayed == expected
    # Everything else (norm scales and biases, all biases) is left alone.
    not_decayed = paths_where(decay_mask(params, decay_embeddings), False)
    assert all(p.endswith(("/bias", "/scale")) or p in ("embed/embedding", "pos_embed")
               for p in not_decayed)
    assert "final_norm/scale" in not_decayed and "layer_0/attn/query/bias" in not_decayed


def test_decay_mask_llama_style_untied_head_decays():
    _, params = param_shapes({"model.positions": "rope", "model.norm": "rmsnorm",
                              "model.mlp": "swiglu", "model.use_bias": False,
                              "model.tie_embeddings": False})
    decayed = paths_where(decay_mask(params, False))
    assert decayed == LAYER_MATRICES | {"layer_0/mlp/gate/kernel", "layer_0/mlp/up/kernel",
                                        "layer_0/mlp/down/kernel", "lm_head/kernel"}


def test_decay_mask_reaches_the_update():
    """With zero gradients, AdamW's update is exactly -lr * weight_decay * param where it decays."""
    cfg, shapes = param_shapes({"optim.lr": 0.5, "optim.weight_decay": 0.1,
                                "optim.decay_embeddings": False})
    params = helpers.randomize(shapes)
    tx, _ = make_optimizer(cfg)
    zeros = jax.tree.map(np.zeros_like, params)
    updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(zeros, params)
    mask = decay_mask(params, False)
    expected = jax.tree.map(lambda p, m: -0.5 * 0.1 * p if m else np.zeros_like(p), params, mask)
    jax.tree.map(lambda u, e: np.testing.assert_allclose(u, e, rtol=1e-6, atol=1e-8),
                 updates, expected)


def closed_form(kind, s, lr, min_lr, warmup, decay_steps):
    if s < warmup:
        return lr * (s + 1) / (warmup + 1)  # nanoGPT's get_lr
    if kind == "constant":
        return lr
    frac = min(s - warmup, decay_steps - warmup) / (decay_steps - warmup)
    if kind == "linear":
        return lr + (min_lr - lr) * frac
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * frac))


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
@pytest.mark.parametrize("decay_steps", [0, 60])
def test_schedule_matches_closed_form(kind, decay_steps):
    cfg = helpers.tiny_config({"optim.schedule": kind, "optim.lr": 1e-3, "optim.min_lr": 1e-4,
                               "optim.warmup_steps": 10, "optim.decay_steps": decay_steps,
                               "train.steps": 110})
    lr_at = schedule(cfg.optim, cfg.train.steps)
    horizon = decay_steps or 110
    for s in (0, 1, 5, 9, 10, 11, 35, 59, 60, 61, 85, 109, 110, 500):
        expected = closed_form(kind, s, 1e-3, 1e-4, 10, horizon)
        assert float(lr_at(s)) == pytest.approx(expected, rel=1e-5, abs=1e-12), s
    assert float(lr_at(10)) == pytest.approx(1e-3)
    if kind != "constant":
        assert float(lr_at(horizon)) == pytest.approx(1e-4)


def wsd_closed_form(s, lr, min_lr, warmup, start, end, shape):
    if s < warmup:
        return lr * (s + 1) / (warmup + 1)
    if s < start:
        return lr
    t = min(s - start, end - start) / (end - start)
    drop = {"linear": t, "cosine": 0.5 * (1 - math.cos(math.pi * t)), "1-sqrt": math.sqrt(t)}
    return lr - (lr - min_lr) * drop[shape]


WSD_STEPS = (0, 1, 5, 9, 10, 11, 50, 79, 80, 81, 85, 90, 99, 100, 101, 1000)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_wsd_matches_closed_form(shape):
    """Warmup 10, stable to step 80 (the last 20% of 100 steps decays), then `shape` to min_lr."""
    cfg = helpers.tiny_config({"optim.schedule": "wsd", "optim.lr": 2e-3, "optim.min_lr": 1e-4,
                               "optim.warmup_steps": 10, "optim.decay_fraction": 0.2,
                               "optim.decay_shape": shape, "train.steps": 100})
    lr_at = schedule(cfg.optim, cfg.train.steps)
    for s in WSD_STEPS:
        expected = wsd_closed_form(s, 2e-3, 1e-4, 10, 80, 100, shape)
        assert float(lr_at(s)) == pytest.approx(expected, rel=1e-5, abs=1e-12), (shape, s)
    assert float(lr_at(0)) == pytest.approx(2e-3 / 11)  # nanoGPT: the first step is not lr 0
    assert float(lr_at(79)) == pytest.approx(2e-3) and float(lr_at(100)) == pytest.approx(1e-4)


@pytest.mark.parametrize("budget", [60, 100, 140])
def test_wsd_cooldown_branches_from_the_stable_run(budget):
    """A cooldown with decay_start=D and its own budget is the long stable run up to step D,
    then the closed-form decay: one stable run can be branched at D for every budget."""
    common = {"optim.lr": 1e-3, "optim.min_lr": 0.0, "optim.warmup_steps": 10,
              "optim.decay_shape": "1-sqrt"}
    stable = schedule(helpers.tiny_config({**common, "optim.schedule": "constant",
                                           "train.steps": 1000}).optim, 1000)
    start = budget - budget // 5
    cfg = helpers.tiny_config({**common, "optim.schedule": "wsd", "optim.decay_start": start,
                               "train.steps": budget})
    validation.validate(cfg, num_devices=1)
    branch = schedule(cfg.optim, budget)
    for s in range(start + 1):
        assert float(branch(s)) == float(stable(s)), s
    for s in range(start, budget + 2):
        expected = wsd_closed_form(s, 1e-3, 0.0, 10, start, budget, "1-sqrt")
        assert float(branch(s)) == pytest.approx(expected, rel=1e-5, abs=1e-12), s
    assert float(branch(budget)) == 0.0


@pytest.mark.parametrize("field,value", [("optim.decay_start", 5), ("optim.decay_start", 100),
                                         ("optim.decay_fraction", 0.0),
                                         ("optim.decay_shape", "exp")])
def test_wsd_bad_fields_are_config_errors(field, value):
    cfg = helpers.tiny_config({"optim.schedule": "wsd", "optim.warmup_steps": 10,
                               "train.steps": 100, field: value})
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validation.validate(cfg, num_devices=1)


def test_schedule_without_warmup_starts_at_peak():
    cfg = helpers.tiny_config({"optim.warmup_steps": 0, "optim.schedule": "cosine",
                               "train.steps": 100})
    lr_at = schedule(cfg.optim, 100)
    assert float(lr_at(0)) == pytest.approx(cfg.optim.lr)
    assert float(lr_at(50)) == pytest.approx(closed_form("cosine", 50, cfg.optim.lr,
                                                         cfg.optim.min_lr, 0, 100), rel=1e-5)


def run_steps(accum, batch, steps=2):
    cfg = helpers.tiny_config({"optim.grad_accum_steps": accum, "model.num_layers": 1,
                               "optim.lr": 1e-2, "optim.eps": 1e-4})
    parts = helpers.TrainParts(cfg)
    state, history = parts.init(), []
    for _ in range(steps):
        state, metrics = parts.step(state, batch)
        history.append({k: float(v) for k, v in metrics.items()})
    return jax.device_get(state.params), history


@pytest.mark.parametrize("weighted", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_grad_accumulation_equals_one_big_batch(weighted):
    cfg = helpers.tiny_config()
    batch = helpers.random_tokens(cfg, seed=3)
    if weighted:
        # Unequal numbers of counted tokens in the two microbatches (rows 0-3 vs 4-7).
        weights = np.ones_like(batch["targets"], np.float32)
        weights[:4, 3:] = 0.0
        batch["weights"] = weights
    params_1, history_1 = run_steps(1, batch)
    params_2, history_2 = run_steps(2, batch)
    for m1, m2 in zip(history_1, history_2):
        assert m2["train_loss"] == pytest.approx(m1["train_loss"], rel=1e-5)
        assert m2["grad_norm"] == pytest.approx(m1["grad_norm"], rel=1e-4)
    # Adam divides by |g| + eps, so with a tiny eps an element whose gradient is at float
    # rounding level moves by ±lr on a coin flip; eps=1e-4 keeps the update a smooth function.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6),
                 params_2, params_1)
