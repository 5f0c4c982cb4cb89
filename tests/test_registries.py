"""Extension by name: a toy attention backend, optimizer and metrics writer each go into one
registry, pass validation by that name alone, and are what two training steps actually run."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax import validation
from lmjax.errors import ConfigError
from lmjax.model import attention
from lmjax.train import metrics, optim
from lmjax.train.loop import train
from tests import helpers

CALLS = {"attention": 0, "optimizer": 0, "writer": []}


def toy_attention(q, k, v, segments, cfg, window=0):
    """Causal attention written out by hand: softmax(q k^T / sqrt(K)) v over keys <= query."""
    assert window == 0  # the test model has no local layers
    CALLS["attention"] += 1
    B, T, H, K = q.shape
    k = jnp.repeat(k, H // k.shape[2], axis=2)
    v = jnp.repeat(v, H // v.shape[2], axis=2)
    scores = jnp.einsum("bthk,bshk->bhts", q, k) / jnp.sqrt(K)
    causal = jnp.tril(jnp.ones((T, T), bool))
    probs = jax.nn.softmax(jnp.where(causal, scores, -1e30), axis=-1)
    return jnp.einsum("bhts,bshk->bthk", probs, v)


def toy_sgd(o, lr, mask, axes):
    CALLS["optimizer"] += 1
    return optax.sgd(lr)


class ToyWriter:
    requires = None

    def __init__(self, cfg, workdir):
        pass

    def truncate_after(self, step):
        pass

    def write(self, step, record):
        CALLS["writer"].append(record)

    def close(self):
        pass


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(attention.ATTENTION_BACKENDS, "toy", toy_attention)
    monkeypatch.setitem(optim.OPTIMIZERS, "toy_sgd", toy_sgd)
    monkeypatch.setitem(metrics.WRITERS, "toy", ToyWriter)
    CALLS.update(attention=0, optimizer=0, writer=[])


def test_unregistered_names_are_refused_with_the_registered_ones_listed():
    for field, value, listed in (("model.attention", "toy", "blockwise"),
                                 ("optim.name", "toy_sgd", "adamw"),
                                 ("model.dropout_rng", "philox", "threefry, hash"),
                                 ("metrics.writers", ("toy",), "jsonl")):
        cfg = helpers.tiny_config({field: value})
        with pytest.raises(ConfigError, match=listed):
            validation.validate(cfg, 1)


def test_toy_entries_train_two_steps(registered, tmp_path):
    cfg = helpers.tiny_config({
        "model.attention": "toy", "optim.name": "toy_sgd", "metrics.writers": ("jsonl", "toy"),
        "optim.lr": 0.5, "optim.grad_clip": 0.0, "train.steps": 2, "train.log_every": 1,
        "train.eval_steps": 0, "train.sample_tokens": 0, "train.progress": False,
        "model.vocab_size": 65, "data.path": helpers.SHAKESPEARE})
    workdir = str(tmp_path / "run")
    summary = train(cfg, workdir)
    assert summary["step"] == 2
    assert CALLS["attention"] >= 1 and CALLS["optimizer"] == 1
    # The toy writer saw what the JSONL writer wrote, step for step.
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        jsonl = [json.loads(line) for line in f]
    assert [r["step"] for r in CALLS["writer"]] == [1, 2] == [r["step"] for r in jsonl]
    assert all(np.isfinite(r["train_loss"]) for r in CALLS["writer"])
    # Plain SGD with a constant LR: the logged LR is the configured one, no warmup.
    assert CALLS["writer"][-1]["learning_rate"] == pytest.approx(0.5)


def test_toy_attention_equals_the_einsum_backend(registered):
    cfg = helpers.model_cfg(d_model=16, num_heads=4, num_kv_heads=2, num_layers=1)
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 7, 4, 4)).astype(np.float32)
    k, v = (rng.normal(size=(2, 7, 2, 4)).astype(np.float32) for _ in range(2))
    np.testing.assert_allclose(toy_attention(q, k, v, None, cfg),
                               attention.ATTENTION_BACKENDS["einsum"](q, k, v, None, cfg),
                               rtol=1e-5, atol=1e-5)
