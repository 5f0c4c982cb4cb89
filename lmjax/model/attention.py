"""Causal self-attention: MHA, GQA and MQA (num_kv_heads), position encodings, named backends.

Backends, chosen by name in model.attention (ATTENTION_BACKENDS):
  einsum       plain einsums over the full T x T score matrix.
  blockwise    query blocks attend only to key blocks at or below the diagonal: the same result
               with ~half the score FLOPs at long T (the masked upper triangle is never computed).
  dot_product  jax.nn.dot_product_attention (cuDNN flash attention on GPU where it applies).
  dot_product_cudnn  the same, required to run cuDNN's kernel (an error where it cannot).
A backend is a function (q (B,T,H,K), k (B,T,G,K), v (B,T,G,K), segments (B,T) or None, model
cfg) -> (B,T,H,K); a new kernel is one entry.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.model.layers import Projection, constrain, out_init_std
from lmjax.model.positions import POSITIONS

NEG_INF = -1e30  # finite, so fully masked rows give a uniform softmax rather than NaN


def attention_mask(q_positions_T, k_positions_S, q_segments_BxT=None, k_segments_BxS=None):
    """Boolean (B or 1, T, S): key index <= query index, and same document when segments given."""
    mask = q_positions_T[:, None] >= k_positions_S[None, :]
    mask = mask[None]
    if q_segments_BxT is not None:
        mask = mask & (q_segments_BxT[:, :, None] == k_segments_BxS[:, None, :])
    return mask


def einsum_attention(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, mask_BxTxS):
    B, T, H, K = q_BxTxHxK.shape
    G = k_BxSxGxK.shape[2]
    q = q_BxTxHxK.reshape(B, T, G, H // G, K)
    scores = jnp.einsum("btgrk,bsgk->bgrts", q, k_BxSxGxK,
                        preferred_element_type=jnp.float32) * (K ** -0.5)
    scores = jnp.where(mask_BxTxS[:, None, None], scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_BxSxGxK.dtype)
    out = jnp.einsum("bgrts,bsgk->btgrk", probs, v_BxSxGxK)
    return out.reshape(B, T, H, K)


def full_causal(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segments_BxT, cfg):
    T = q_BxTxHxK.shape[1]
    mask = attention_mask(jnp.arange(T), jnp.arange(T), segments_BxT, segments_BxT)
    return einsum_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, mask)


def blockwise_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segments_BxT, cfg):
    """Causal attention by query blocks; block i sees keys [0, (i+1)*block) only."""
    T, block = q_BxTxHxK.shape[1], cfg.attention_block
    if T <= block:
        return full_causal(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segments_BxT, cfg)
    outs = []
    for start in range(0, T, block):
        end = min(start + block, T)
        q_pos, k_pos = jnp.arange(start, end), jnp.arange(end)
        q_seg = None if segments_BxT is None else segments_BxT[:, start:end]
        k_seg = None if segments_BxT is None else segments_BxT[:, :end]
        outs.append(einsum_attention(q_BxTxHxK[:, start:end], k_BxTxGxK[:, :end],
                                     v_BxTxGxK[:, :end], attention_mask(q_pos, k_pos, q_seg, k_seg)))
    return jnp.concatenate(outs, axis=1)


def dot_product_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segments_BxT, cfg):
    if segments_BxT is None:
        return jax.nn.dot_product_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, is_causal=True)
    T = q_BxTxHxK.shape[1]
    mask = attention_mask(jnp.arange(T), jnp.arange(T), segments_BxT, segments_BxT)
    return jax.nn.dot_product_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, mask=mask[:, None])


def cudnn_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segments_BxT, cfg):
    """jax.nn.dot_product_attention pinned to cuDNN's fused kernel (GPU, bf16/fp16 only)."""
    if segments_BxT is None:
        return jax.nn.dot_product_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, is_causal=True,
                                            implementation="cudnn")
    T = q_BxTxHxK.shape[1]
    mask = attention_mask(jnp.arange(T), jnp.arange(T), segments_BxT, segments_BxT)
    return jax.nn.dot_product_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, mask=mask[:, None],
                                        implementation="cudnn")


ATTENTION_BACKENDS = {
    "einsum": full_causal,
    "blockwise": blockwise_attention,
    "dot_product": dot_product_attention,
    "dot_product_cudnn": cudnn_attention,
}


def cached_attention(module: nn.Module, q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, positions_BxT,
                     cache_len: int):
    """Attention over a KV cache in the module's 'cache' collection (incremental decoding).

    Row b's T new keys/values are written at cache slots positions[b, 0] ... positions[b, 0]+T-1
    (slot = position), and each query sees the slots at or before its own position. Rows may sit
    at different positions; slots past a row's position may hold stale values and are masked.
    """
    B, T, G, K = k_BxTxGxK.shape
    names = ("batch", None, "act_kv_heads", None)
    cached_k = module.variable("cache", "cached_key", jnp.zeros, (B, cache_len, G, K), k_BxTxGxK.dtype)
    cached_v = module.variable("cache", "cached_value", jnp.zeros, (B, cache_len, G, K), v_BxTxGxK.dtype)
    write = jax.vmap(lambda cache, new, start: jax.lax.dynamic_update_slice(cache, new,
                                                                            (start, 0, 0)))
    start_B = positions_BxT[:, 0]
    cached_k.value = constrain(write(cached_k.value, k_BxTxGxK, start_B), names)
    cached_v.value = constrain(write(cached_v.value, v_BxTxGxK, start_B), names)
    mask_BxTxS = positions_BxT[:, :, None] >= jnp.arange(cache_len)[None, None, :]
    return einsum_attention(q_BxTxHxK, cached_k.value, cached_v.value, mask_BxTxS)


def head_dim(cfg) -> int:
    return cfg.head_dim or cfg.d_model // cfg.num_heads


class Attention(nn.Module):
    cfg: object  # the model section of the config
    decode_len: int = 0  # > 0: decode with a KV cache of this many slots (see cached_attention)

    @nn.compact
    def __call__(self, x_BxTxD, positions_BxT, segments_BxT=None):
        c = self.cfg
        H, G, K, D = c.num_heads, c.num_kv_heads or c.num_heads, head_dim(c), c.d_model
        param_dtype, dtype = jnp.dtype(c.param_dtype), jnp.dtype(c.dtype)

        def proj(name, heads, axis):
            return Projection((D,), (heads, K), ("embed", axis, "head_dim"), c.use_bias,
                              c.init_std, param_dtype, dtype, name=name)

        q = proj("query", H, "heads")(x_BxTxD)
        k = proj("key", G, "kv_heads")(x_BxTxD)
        v = proj("value", G, "kv_heads")(x_BxTxD)
        q = constrain(q, ("batch", "act_len", "act_heads", None))
        k = constrain(k, ("batch", "act_len", "act_kv_heads", None))
        v = constrain(v, ("batch", "act_len", "act_kv_heads", None))
        rotate = POSITIONS[c.positions].rotate
        if rotate is not None:
            q, k = rotate(q, positions_BxT, c), rotate(k, positions_BxT, c)

        if self.decode_len:
            out = cached_attention(self, q, k, v, positions_BxT, self.decode_len)
        else:
            out = ATTENTION_BACKENDS[c.attention](q, k, v, segments_BxT, c)
        out = constrain(out, ("batch", "act_len", "act_heads", None))
        return Projection((H, K), (D,), ("heads", "head_dim", "embed"), c.use_bias,
                          out_init_std(c), param_dtype, dtype, name="out")(out)
