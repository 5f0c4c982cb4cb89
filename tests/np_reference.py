"""A float64 numpy decoder with every feature of the current open families, written from the
papers' and model cards' formulas (not from lmjax's code): RoPE with linear and Llama 3.1
frequency scaling, sliding-window layers, soft-capped scores and logits, QK-norm, Gemma's
(1 + w) RMSNorm, scaled embeddings, GeGLU and post-norms."""
import math

import numpy as np

from tests.helpers import np_dense, np_gelu_tanh, np_layernorm, np_silu


def np_inv_freq(head_dim, theta, scaling="none", factor=1.0, low=1.0, high=4.0, original=8192):
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)
    if scaling == "linear":
        return freqs / factor
    if scaling == "llama3":  # Meta's apply_scaling, one frequency at a time
        out = []
        for f in freqs:
            wavelen = 2 * math.pi / f
            if wavelen < original / high:
                out.append(f)
            elif wavelen > original / low:
                out.append(f / factor)
            else:
                smooth = (original / wavelen - low) / (high - low)
                out.append((1 - smooth) * f / factor + smooth * f)
        return np.array(out)
    return freqs


def np_rope_freqs(x_BTHK, positions_BT, inv_freq):
    half = x_BTHK.shape[-1] // 2
    z = (x_BTHK[..., :half] + 1j * x_BTHK[..., half:]) * np.exp(
        1j * positions_BT[:, :, None, None] * inv_freq)
    return np.concatenate([z.real, z.imag], axis=-1)


def np_norm_any(x, p, mc):
    if mc.norm == "layernorm":
        return np_layernorm(x, p["scale"], p.get("bias"), mc.norm_eps)
    gain = 1.0 + p["scale"] if mc.norm == "gemma_rmsnorm" else p["scale"]
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + mc.norm_eps) * gain


def np_layer_is_local(mc):
    if not mc.sliding_window:
        return [False] * mc.num_layers
    if mc.local_layers == "all":
        return [True] * mc.num_layers
    if mc.local_layers == "alternate":
        return [i % 2 == 0 for i in range(mc.num_layers)]
    return [ch == "L" for ch in mc.local_layers]


def np_attention_any(x, p, mc, positions, local):
    B, T, _ = x.shape
    H = mc.num_heads
    G = mc.num_kv_heads or H
    q, k, v = np_dense(x, p["query"]), np_dense(x, p["key"]), np_dense(x, p["value"])
    if mc.qk_norm:
        q, k = np_norm_any(q, p["query_norm"], mc), np_norm_any(k, p["key_norm"], mc)
    K = q.shape[-1]
    if mc.positions == "rope":
        if local and mc.rope_local_theta:
            inv_freq = np_inv_freq(K, mc.rope_local_theta)
        else:
            inv_freq = np_inv_freq(K, mc.rope_theta, mc.rope_scaling, mc.rope_scaling_factor,
                                   mc.rope_low_freq_factor, mc.rope_high_freq_factor,
                                   mc.rope_original_max_seq_len)
        q, k = np_rope_freqs(q, positions, inv_freq), np_rope_freqs(k, positions, inv_freq)
    k, v = np.repeat(k, H // G, axis=2), np.repeat(v, H // G, axis=2)
    scores = np.einsum("bthk,bshk->bhts", q, k) / math.sqrt(mc.query_pre_attn_scalar or K)
    if mc.attn_logit_softcap:
        scores = mc.attn_logit_softcap * np.tanh(scores / mc.attn_logit_softcap)
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    allowed = j <= i
    if local:
        allowed = allowed & (i - j < mc.sliding_window)
    scores = np.where(allowed[None, None], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np_dense(np.einsum("bhts,bshk->bthk", probs, v), p["out"], n_in=2)


def np_mlp_any(x, p, kind):
    if kind in ("swiglu", "geglu"):
        act = np_silu if kind == "swiglu" else np_gelu_tanh
        return np_dense(act(np_dense(x, p["gate"])) * np_dense(x, p["up"]), p["down"])
    return np_dense(np_gelu_tanh(np_dense(x, p["fc_in"])), p["fc_out"])


def np_decoder(tokens, params, mc):
    B, T = tokens.shape
    positions = np.broadcast_to(np.arange(T), (B, T))
    x = params["embed"]["embedding"][tokens]
    if mc.scale_embeddings:
        x = x * math.sqrt(mc.d_model)
    if mc.positions == "learned":
        x = x + params["pos_embed"][positions]
    for i, local in enumerate(np_layer_is_local(mc)):
        p = params[f"layer_{i}"]
        h = np_attention_any(np_norm_any(x, p["attn_norm"], mc), p["attn"], mc, positions, local)
        x = x + (np_norm_any(h, p["attn_post_norm"], mc) if mc.post_norms else h)
        h = np_mlp_any(np_norm_any(x, p["mlp_norm"], mc), p["mlp"], mc.mlp)
        x = x + (np_norm_any(h, p["mlp_post_norm"], mc) if mc.post_norms else h)
    x = np_norm_any(x, params["final_norm"], mc)
    logits = x @ params["embed"]["embedding"].T if mc.tie_embeddings else np_dense(
        x, params["lm_head"])
    if mc.final_logit_softcap:
        logits = mc.final_logit_softcap * np.tanh(logits / mc.final_logit_softcap)
    return logits
