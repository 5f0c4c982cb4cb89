"""Position encodings by name (model.positions): where each one enters the model.

An entry says how token positions reach attention: `embed` adds a learned table to the token
embeddings (GPT-2); `rotate` rotates queries and keys (RoPE). A new encoding is one entry here.

RoPE frequencies may be rescaled for long contexts by name (model.rope_scaling, ROPE_SCALINGS):
`linear` divides every frequency by model.rope_scaling_factor (position interpolation);
`llama3` divides only the low frequencies, blending in between (Llama 3.1's scheme). Local
(sliding-window) layers may use their own theta (model.rope_local_theta, as Gemma 3), unscaled.
"""
import dataclasses
import math
from typing import Callable, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from lmjax.model.layers import logical_param


def rope(x_BxTxHxK, positions_BxT, inv_freq_K2):
    """Rotary embedding in the rotate-half layout (as Hugging Face LLaMA checkpoints)."""
    half = x_BxTxHxK.shape[-1] // 2
    angles_BxTxK2 = positions_BxT.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq_K2,
                                                                                jnp.float32)
    cos = jnp.cos(angles_BxTxK2)[:, :, None, :]
    sin = jnp.sin(angles_BxTxK2)[:, :, None, :]
    x = x_BxTxHxK.astype(jnp.float32)
    x1, x2 = x[..., :half], x[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BxTxHxK.dtype)


def no_scaling(inv_freq, cfg):
    return inv_freq


def linear_scaling(inv_freq, cfg):
    return inv_freq / cfg.rope_scaling_factor


def llama3_scaling(inv_freq, cfg):
    """Llama 3.1: wavelengths beyond original_len / low_freq_factor are stretched by `factor`,
    those below original_len / high_freq_factor are kept, and the band between is blended."""
    factor, low, high = cfg.rope_scaling_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    original = cfg.rope_original_max_seq_len
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= original / high) & (wavelen <= original / low)
    return np.where(medium, blended, scaled)


# model.rope_scaling -> (inverse frequencies (K/2,) float64, model cfg) -> rescaled frequencies
ROPE_SCALINGS = {
    "none": no_scaling,
    "linear": linear_scaling,
    "llama3": llama3_scaling,
}


def rope_frequencies(cfg, local: bool = False) -> np.ndarray:
    """(head_dim / 2,) inverse frequencies of a global layer, or of a local one."""
    head_dim = cfg.head_dim or cfg.d_model // cfg.num_heads
    half = head_dim // 2
    if local and cfg.rope_local_theta:
        return cfg.rope_local_theta ** (-np.arange(half, dtype=np.float64) / half)
    inv_freq = cfg.rope_theta ** (-np.arange(half, dtype=np.float64) / half)
    return ROPE_SCALINGS[cfg.rope_scaling](inv_freq, cfg)


def rotate_rope(x_BxTxHxK, positions_BxT, cfg, local=False):
    """`local` is a Python bool, or a traced bool when scanned layers mix local and global."""
    global_freq = rope_frequencies(cfg, local=False)
    local_freq = rope_frequencies(cfg, local=True)
    if isinstance(local, bool) or np.array_equal(global_freq, local_freq):
        return rope(x_BxTxHxK, positions_BxT, local_freq if local is True else global_freq)
    return rope(x_BxTxHxK, positions_BxT, jnp.where(local, local_freq, global_freq))


def learned_embedding(module: nn.Module, cfg, positions_BxT, dtype):
    """(B, T, D) rows of a learned (max_seq_len, d_model) table, added to the token embeddings."""
    table = logical_param(module, "pos_embed", (cfg.max_seq_len, cfg.d_model), (None, "embed"),
                          nn.initializers.normal(cfg.init_std), jnp.dtype(cfg.param_dtype))
    # Decoding marks padding with position -1 (lmjax.infer.generate); any row serves it.
    return jnp.take(table, jnp.maximum(positions_BxT, 0), axis=0).astype(dtype)


@dataclasses.dataclass(frozen=True)
class PositionEncoding:
    # (module, model cfg, positions (B, T), dtype) -> (B, T, D) added to the embeddings
    embed: Optional[Callable] = None
    # (q or k (B, T, H, K), positions (B, T), model cfg, local) -> rotated q or k
    rotate: Optional[Callable] = None


POSITIONS = {
    "learned": PositionEncoding(embed=learned_embedding),
    "rope": PositionEncoding(rotate=rotate_rope),
}
