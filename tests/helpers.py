"""Shared test utilities: a tiny config, the pieces of a train step, numpy references, the CLIs.

The numpy functions here are independent re-implementations (float64, written from the papers'
formulas, not from lmjax's code) that the model's modules are checked against.
"""
import math
import os
import subprocess
import sys

import numpy as np
from scipy.special import erf

from lmjax.config import apply_overrides, base_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = os.path.join(REPO, "lmjax", "data", "tinyshakespeare.txt")
EXPERIMENT = os.path.join(REPO, "experiments", "shakespeare_char.py")

TINY = {
    "model.num_layers": 2, "model.d_model": 32, "model.num_heads": 4, "model.d_ff": 64,
    "model.vocab_size": 64, "model.max_seq_len": 16,
    "train.seq_len": 16, "train.batch_size": 8, "train.steps": 5,
    "optim.warmup_steps": 0, "optim.schedule": "constant",
}


def tiny_config(overrides=None):
    """A 2-layer, d_model 32, 4-head, vocab 64, seq 16, batch 8 config; `overrides` by dotted name."""
    cfg = base_config()
    apply_overrides(cfg, TINY)
    apply_overrides(cfg, overrides or {})
    return cfg


def random_tokens(cfg, seed=0, batch=None):
    rng = np.random.default_rng(seed)
    shape = (batch or cfg.train.batch_size, cfg.train.seq_len + 1)
    windows = rng.integers(0, cfg.model.vocab_size, size=shape).astype(np.int32)
    return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}


def strip_boxes(tree):
    from lmjax.train.state import strip_boxes as strip
    return strip(tree)


unboxed = strip_boxes


def randomize(params, seed=0, std=0.3, scale_center=1.0):
    """Replaces every leaf with N(0, std²) (norm scales around scale_center: 1, or 0 for norms
    that store their scale as an offset from 1), so no parameter is trivial."""
    import jax
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    rng = np.random.default_rng(seed)
    out = []
    for path, leaf in leaves:
        value = rng.normal(0.0, std, size=leaf.shape)
        if "scale" in str(path[-1]):
            value = scale_center + value  # norm scales live around 1
        out.append(np.asarray(value, dtype=leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def to_numpy(tree):
    import jax
    return jax.tree.map(lambda x: np.asarray(x, dtype=np.float64), tree)


def model_cfg(**fields):
    """The model section of the default config with `fields` set: what modules are built from."""
    from lmjax.config import base_config
    cfg = base_config().model
    with cfg.unlocked():
        for name, value in fields.items():
            cfg[name] = value
    return cfg


class TrainParts:
    """lmjax.train.step.build's mesh, model, optimizer, shardings and jitted train step, on any
    list of devices: the same wiring lmjax-train runs."""

    def __init__(self, cfg, devices=None):
        from lmjax.parallel import mesh as mesh_lib
        from lmjax.train import step as step_lib
        self.cfg = cfg
        self.mesh = mesh_lib.make_mesh(cfg, devices)
        self.built = step_lib.build(cfg, self.mesh)
        self.rules, self.model, self.tx = self.built.rules, self.built.model, self.built.tx
        self.state_sh, self.batch_sh = self.built.state_shardings, self.built.batch_sharding
        self.step_fn = self.built.train_step

    def context(self):
        return self.built.context()

    def init(self, params=None, seed=0):
        """A sharded TrainState from `params`, or from N(0, init_std²) numpy draws.

        The numpy draws stand in for model.init where the test does not care how weights are
        born: compiling the jitted random init costs seconds on CPU (lmjax-train's path is
        covered by the command-line tests).
        """
        from lmjax.train import state as state_lib
        if params is None:
            shapes = strip_boxes(state_lib.abstract_params(self.model, self.cfg))
            params = randomize(shapes, seed, std=self.cfg.model.init_std)
        with self.context():
            return state_lib.init_state(self.model, self.tx, self.cfg, self.state_sh, params)

    def batch(self, host_batch):
        from lmjax.parallel import shardings as sharding
        return sharding.global_batch(host_batch, self.batch_sh)

    def step(self, state, host_batch):
        with self.context():
            return self.step_fn(state, self.batch(host_batch))


# ---------------------------------------------------------------- numpy references (float64)

def assert_close(actual, expected, tol=1e-5):
    """Equal within `tol` relative to each element, or to the tensor's scale for small elements.

    float32 compute carries ~1e-7 relative error per operation on the tensor's typical magnitude,
    so an element near zero inside a tensor of magnitude ~10 is only accurate to ~1e-6 absolute.
    """
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def np_layernorm(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps) * scale
    return y if bias is None else y + bias


def np_rmsnorm(x, scale, eps):
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * scale


def np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def np_gelu_exact(x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def np_silu(x):
    return x / (1.0 + np.exp(-x))


def np_dense(x, p, n_in=1):
    """x @ kernel (+ bias), contracting x's last n_in dims with the kernel's first n_in."""
    kernel = p["kernel"]
    y = np.tensordot(x, kernel, axes=(list(range(x.ndim - n_in, x.ndim)), list(range(n_in))))
    return y + p["bias"] if "bias" in p else y


def np_mlp(x, p, kind):
    if kind == "swiglu":
        h = np_silu(np_dense(x, p["gate"])) * np_dense(x, p["up"])
        return np_dense(h, p["down"])
    act = np_gelu_tanh if kind == "gelu" else np_gelu_exact
    return np_dense(act(np_dense(x, p["fc_in"])), p["fc_out"])


def np_rope(x_BTHK, positions_BT, theta):
    """Rotary embedding as a complex rotation of (x[i], x[i + K/2]) by position * theta^(-2i/K)."""
    K = x_BTHK.shape[-1]
    half = K // 2
    inv_freq = theta ** (-2.0 * np.arange(half) / K)
    angle = positions_BT[:, :, None, None] * inv_freq  # B, T, 1, K/2
    z = (x_BTHK[..., :half] + 1j * x_BTHK[..., half:]) * np.exp(1j * angle)
    return np.concatenate([z.real, z.imag], axis=-1)


def np_attention(x, p, num_heads, num_kv_heads, positions=None, rope_theta=None, segments=None,
                 scale=None, drop_probs=None):
    """Causal softmax attention; kv head g serves query heads [g*H/G, (g+1)*H/G).
    Scores are scaled by `scale`, 1/sqrt(head_dim) by default."""
    B, T, _ = x.shape
    q, k, v = np_dense(x, p["query"]), np_dense(x, p["key"]), np_dense(x, p["value"])
    if positions is None:
        positions = np.broadcast_to(np.arange(T), (B, T))
    if rope_theta is not None:
        q, k = np_rope(q, positions, rope_theta), np_rope(k, positions, rope_theta)
    group = num_heads // num_kv_heads
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = np.einsum("bthk,bshk->bhts", q, k) * scale
    allowed = np.tril(np.ones((T, T), bool))[None, None]
    if segments is not None:
        allowed = allowed & (segments[:, None, :, None] == segments[:, None, None, :])
    scores = np.where(allowed, scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(-1, keepdims=True)
    if drop_probs is not None:
        probs = drop_probs(probs)
    out = np.einsum("bhts,bshk->bthk", probs, v)
    return np_dense(out, p["out"], n_in=2)


def np_norm(x, p, kind, eps):
    if kind == "layernorm":
        return np_layernorm(x, p["scale"], p.get("bias"), eps)
    return np_rmsnorm(x, p["scale"], eps)


def np_mup_factors(mc):
    """(attention score scale, logit multiplier) from Tensor Programs V: 1/K attention (times
    sqrt of the base width's head dim, so the base model is sp), logits times base/width."""
    K = mc.head_dim or mc.d_model // mc.num_heads
    if mc.get("parametrization", "sp") != "mup":
        return 1 / math.sqrt(K), 1.0
    base_K = mc.head_dim or mc.mup_base_width // mc.num_heads
    return math.sqrt(base_K) / K, mc.mup_base_width / mc.d_model


def np_transformer(tokens, params, mc, positions=None, segments=None, dropout_masks=None):
    """The whole decoder (pre-norm blocks, final norm, tied or untied head) in numpy.

    dropout_masks: {"embed": keep mask, "layer_i": {"probs", "attn", "mlp": keep masks}} applies
    nanoGPT's dropout (kept values scaled by 1 / (1 - model.dropout)) at those four places."""
    keep = 1.0 - mc.get("dropout", 0.0)
    drop = lambda x, mask: x if dropout_masks is None else x * mask / keep
    masks = dropout_masks or {}
    B, T = tokens.shape
    attn_scale, logit_mult = np_mup_factors(mc)
    if positions is None:
        positions = np.broadcast_to(np.arange(T), (B, T))
    x = params["embed"]["embedding"][tokens]
    if mc.positions == "learned":
        x = x + params["pos_embed"][positions]
    x = drop(x, masks.get("embed"))
    rope_theta = mc.rope_theta if mc.positions == "rope" else None
    for i in range(mc.num_layers):
        p, m = params[f"layer_{i}"], masks.get(f"layer_{i}", {})
        drop_probs = None if dropout_masks is None else (lambda pr, m=m: drop(pr, m["probs"]))
        h = np_attention(np_norm(x, p["attn_norm"], mc.norm, mc.norm_eps), p["attn"],
                         mc.num_heads, mc.num_kv_heads or mc.num_heads, positions,
                         rope_theta, segments, attn_scale, drop_probs)
        x = x + drop(h, m.get("attn"))
        x = x + drop(np_mlp(np_norm(x, p["mlp_norm"], mc.norm, mc.norm_eps), p["mlp"], mc.mlp),
                     m.get("mlp"))
    x = np_norm(x, params["final_norm"], mc.norm, mc.norm_eps)
    if mc.tie_embeddings:
        return x @ params["embed"]["embedding"].T * logit_mult
    return np_dense(x, params["lm_head"]) * logit_mult


def np_cross_entropy(logits, targets):
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, targets[..., None], axis=-1).mean()


# ---------------------------------------------------------------- command lines

def cli_env(**extra):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def run_module(module, args, timeout=300, **env):
    """`python -m module args...` from the repo root; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=cli_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def run_script(code, timeout=300, **env):
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(**env),
                          capture_output=True, text=True, timeout=timeout)
