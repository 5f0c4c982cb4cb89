"""Position encodings by name (model.positions): where each one enters the model.

An entry says how token positions reach attention: `embed` adds a learned table to the token
embeddings (GPT-2); `rotate` rotates queries and keys (RoPE). A new encoding is one entry here.
"""
import dataclasses
from typing import Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from lmjax.model.layers import logical_param


def rope(x_BxTxHxK, positions_BxT, theta: float):
    """Rotary embedding in the rotate-half layout (as Hugging Face LLaMA checkpoints)."""
    half = x_BxTxHxK.shape[-1] // 2
    freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles_BxTxK2 = positions_BxT.astype(jnp.float32)[..., None] * freqs
    cos = jnp.cos(angles_BxTxK2)[:, :, None, :]
    sin = jnp.sin(angles_BxTxK2)[:, :, None, :]
    x = x_BxTxHxK.astype(jnp.float32)
    x1, x2 = x[..., :half], x[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BxTxHxK.dtype)


def learned_embedding(module: nn.Module, cfg, positions_BxT, dtype):
    """(B, T, D) rows of a learned (max_seq_len, d_model) table, added to the token embeddings."""
    table = logical_param(module, "pos_embed", (cfg.max_seq_len, cfg.d_model), (None, "embed"),
                          nn.initializers.normal(cfg.init_std), jnp.dtype(cfg.param_dtype))
    return jnp.take(table, positions_BxT, axis=0).astype(dtype)


@dataclasses.dataclass(frozen=True)
class PositionEncoding:
    # (module, model cfg, positions (B, T), dtype) -> (B, T, D) added to the embeddings
    embed: Optional[Callable] = None
    # (q or k (B, T, H, K), positions (B, T), model cfg) -> rotated q or k
    rotate: Optional[Callable] = None


POSITIONS = {
    "learned": PositionEncoding(embed=learned_embedding),
    "rope": PositionEncoding(rotate=lambda x, positions, cfg: rope(x, positions, cfg.rope_theta)),
}
