"""Causal self-attention: MHA, GQA and MQA (num_kv_heads), position encodings, named backends.

Backends, chosen by name in model.attention (ATTENTION_BACKENDS):
  einsum       plain einsums over the full T x T score matrix.
  blockwise    query blocks attend only to key blocks at or below the diagonal (and, in a local
               layer, within its window): the same result with the masked blocks never computed.
  dot_product  jax.nn.dot_product_attention (cuDNN flash attention on GPU where it applies).
  dot_product_cudnn  the same, required to run cuDNN's kernel (an error where it cannot).
A backend is a function (q (B,T,H,K), k (B,T,G,K), v (B,T,G,K), segments (B,T) or None, model
cfg, window) -> (B,T,H,K); window > 0 limits each query to the last `window` positions (itself
included), as a local (sliding-window) layer. A new kernel is one entry. Backends in
DROPOUT_BACKENDS also take dropout=fn(probs, (first query, first key)) for model.dropout on the
attention probabilities.

Scores are scaled by model.query_pre_attn_scalar ** -0.5 (head_dim when 0) and, with
model.attn_logit_softcap = c > 0, squashed to c * tanh(s / c) before the mask (Gemma 2).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.model import parametrization
from lmjax.model.dropout import DROPOUT_RNGS
from lmjax.model.layers import Norm, Projection, constrain, out_init_std
from lmjax.model.positions import POSITIONS

NEG_INF = -1e30  # finite, so fully masked rows give a uniform softmax rather than NaN


def head_dim(cfg) -> int:
    return cfg.head_dim or cfg.d_model // cfg.num_heads


def attention_scale(cfg) -> float:
    """query_pre_attn_scalar ** -0.5 (head_dim when 0); under μP times sqrt(K0 / K), which makes
    it 1/K up to the base width's constant (lmjax/model/parametrization.py)."""
    return ((cfg.query_pre_attn_scalar or head_dim(cfg)) ** -0.5
            * parametrization.query_multiplier(cfg, head_dim(cfg)))


def within_window(q_positions, k_positions, window):
    """Key positions inside the query's window; `window` may be traced (0 = unlimited)."""
    if isinstance(window, int):
        return True if window <= 0 else k_positions > q_positions - window
    return (window <= 0) | (k_positions > q_positions - window)


def attention_mask(q_positions_T, k_positions_S, q_segments_BxT=None, k_segments_BxS=None,
                   window=0):
    """Boolean (B or 1, T, S): key index <= query index (and within the window), and the same
    document when segments are given."""
    q, k = q_positions_T[:, None], k_positions_S[None, :]
    mask = (q >= k) & within_window(q, k, window)
    mask = mask[None]
    if q_segments_BxT is not None:
        mask = mask & (q_segments_BxT[:, :, None] == k_segments_BxS[:, None, :])
    return mask


def einsum_attention(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, mask_BxTxS, cfg, dropout=None):
    B, T, H, K = q_BxTxHxK.shape
    G = k_BxSxGxK.shape[2]
    q = q_BxTxHxK.reshape(B, T, G, H // G, K)
    scores = jnp.einsum("btgrk,bsgk->bgrts", q, k_BxSxGxK,
                        preferred_element_type=jnp.float32) * attention_scale(cfg)
    if cfg.attn_logit_softcap:
        scores = cfg.attn_logit_softcap * jnp.tanh(scores / cfg.attn_logit_softcap)
    scores = jnp.where(mask_BxTxS[:, None, None], scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1)
    if dropout is not None:  # nanoGPT's attn_dropout, on the probabilities
        probs = dropout(probs)
    probs = probs.astype(v_BxSxGxK.dtype)
    out = jnp.einsum("bgrts,bsgk->btgrk", probs, v_BxSxGxK)
    return out.reshape(B, T, H, K)


def full_causal(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segments_BxT, cfg, window=0, dropout=None):
    T = q_BxTxHxK.shape[1]
    mask = attention_mask(jnp.arange(T), jnp.arange(T), segments_BxT, segments_BxT, window)
    return einsum_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, mask, cfg, dropout)


def blockwise_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segments_BxT, cfg, window=0,
                        dropout=None):
    """Causal attention by query blocks: block [s, e) sees keys [max(0, s - window + 1), e) only,
    or [0, e) in a global layer."""
    T, block = q_BxTxHxK.shape[1], cfg.attention_block
    if T <= block:
        return full_causal(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segments_BxT, cfg, window, dropout)
    outs = []
    for start in range(0, T, block):
        end = min(start + block, T)
        first = max(0, start - window + 1) if window > 0 else 0
        q_pos, k_pos = jnp.arange(start, end), jnp.arange(first, end)
        q_seg = None if segments_BxT is None else segments_BxT[:, start:end]
        k_seg = None if segments_BxT is None else segments_BxT[:, first:end]
        mask = attention_mask(q_pos, k_pos, q_seg, k_seg, window)
        block_dropout = None if dropout is None else (lambda p, s=(start, first): dropout(p, s))
        outs.append(einsum_attention(q_BxTxHxK[:, start:end], k_BxTxGxK[:, first:end],
                                     v_BxTxGxK[:, first:end], mask, cfg, block_dropout))
    return jnp.concatenate(outs, axis=1)


def dot_product_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segments_BxT, cfg, window=0,
                          implementation=None):
    # Soft-capping has no place in jax.nn.dot_product_attention; validation refuses the pair.
    scale = attention_scale(cfg)
    if segments_BxT is None:
        local = (window - 1, 0) if window > 0 else None
        return jax.nn.dot_product_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, scale=scale,
                                            is_causal=True, local_window_size=local,
                                            implementation=implementation)
    T = q_BxTxHxK.shape[1]
    mask = attention_mask(jnp.arange(T), jnp.arange(T), segments_BxT, segments_BxT, window)
    return jax.nn.dot_product_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, scale=scale,
                                        mask=mask[:, None], implementation=implementation)


def cudnn_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segments_BxT, cfg, window=0):
    """jax.nn.dot_product_attention pinned to cuDNN's fused kernel (GPU, bf16/fp16 only)."""
    return dot_product_attention(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segments_BxT, cfg, window,
                                 implementation="cudnn")


ATTENTION_BACKENDS = {
    "einsum": full_causal,
    "blockwise": blockwise_attention,
    "dot_product": dot_product_attention,
    "dot_product_cudnn": cudnn_attention,
}
# Backends that apply model.attn_logit_softcap.
SOFTCAP_BACKENDS = ("einsum", "blockwise")
# Backends that take dropout= (model.dropout on the attention probabilities).
DROPOUT_BACKENDS = ("einsum", "blockwise")


def cached_attention(module: nn.Module, q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, positions_BxT,
                     cache_len: int, cfg, window=0):
    """Attention over a KV cache in the module's 'cache' collection (incremental decoding).

    Row b's T new keys/values are written at cache slots positions[b, 0] ... positions[b, 0]+T-1
    (slot = position), and each query sees the slots at or before its own position (and within
    its window). Rows may sit at different positions; slots past a row's position may hold stale
    values and are masked. A local layer whose window is shorter than the cache keeps a ring
    buffer of `window` slots instead (ring_attention).
    """
    if isinstance(window, int) and 0 < window < cache_len:
        return ring_attention(module, q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, positions_BxT, window, cfg)
    B, T, G, K = k_BxTxGxK.shape
    names = ("batch", None, "act_kv_heads", None)
    cached_k = module.variable("cache", "cached_key", jnp.zeros, (B, cache_len, G, K), k_BxTxGxK.dtype)
    cached_v = module.variable("cache", "cached_value", jnp.zeros, (B, cache_len, G, K), v_BxTxGxK.dtype)
    write = jax.vmap(lambda cache, new, start: jax.lax.dynamic_update_slice(cache, new,
                                                                            (start, 0, 0)))
    start_B = positions_BxT[:, 0]
    cached_k.value = constrain(write(cached_k.value, k_BxTxGxK, start_B), names)
    cached_v.value = constrain(write(cached_v.value, v_BxTxGxK, start_B), names)
    slots = jnp.arange(cache_len)[None, None, :]
    q_positions = positions_BxT[:, :, None]
    mask_BxTxS = (q_positions >= slots) & within_window(q_positions, slots, window)
    return einsum_attention(q_BxTxHxK, cached_k.value, cached_v.value, mask_BxTxS, cfg)


def ring_attention(module: nn.Module, q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, positions_BxT,
                   window: int, cfg):
    """A local layer's cache: `window` slots, position p in slot p % window.

    The T new queries attend to the cached slots and to the T new keys together (a prefill
    longer than the window needs keys the ring cannot hold); then each row's last `window` new
    keys are written. Padding tokens carry position -1: never written, never attended to.
    """
    B, T, G, K = k_BxTxGxK.shape
    names = ("batch", None, "act_kv_heads", None)
    cached_k = module.variable("cache", "cached_key", jnp.zeros, (B, window, G, K), k_BxTxGxK.dtype)
    cached_v = module.variable("cache", "cached_value", jnp.zeros, (B, window, G, K), v_BxTxGxK.dtype)
    cached_pos = module.variable("cache", "cached_position", lambda: jnp.full((B, window), -1,
                                                                             jnp.int32))
    keys = jnp.concatenate([cached_k.value, k_BxTxGxK], axis=1)
    values = jnp.concatenate([cached_v.value, v_BxTxGxK], axis=1)
    k_positions = jnp.concatenate([cached_pos.value, positions_BxT], axis=1)[:, None, :]
    q_positions = positions_BxT[:, :, None]
    mask = (k_positions >= 0) & (q_positions >= k_positions) & (k_positions > q_positions - window)
    out = einsum_attention(q_BxTxHxK, keys, values, mask, cfg)

    last_B = jnp.max(positions_BxT, axis=1, keepdims=True)
    kept = (positions_BxT >= 0) & (positions_BxT > last_B - window)  # distinct slots per row
    slots = jnp.where(kept, positions_BxT % window, window)  # `window` is out of range: dropped
    rows = jnp.arange(B)[:, None]
    cached_k.value = constrain(cached_k.value.at[rows, slots].set(k_BxTxGxK, mode="drop"), names)
    cached_v.value = constrain(cached_v.value.at[rows, slots].set(v_BxTxGxK, mode="drop"), names)
    cached_pos.value = cached_pos.value.at[rows, slots].set(positions_BxT, mode="drop")
    return out


def probs_dropout(rate: float, key, rng: str = "threefry", record=None):
    """Dropout on attention probabilities from one key and the block's (first query, first key)
    (lmjax.model.dropout's DROPOUT_RNGS[rng]).

    A pure function of the key, so it can run inside the lax.cond of mixed local/global layers
    (where a flax submodule could not be called)."""
    keep_mask = DROPOUT_RNGS[rng]

    def drop(probs, starts=(0, 0)):
        keep = keep_mask(key, probs.shape, rate, starts)
        if record is not None:
            record.append(keep)
        return jnp.where(keep, probs / (1.0 - rate), 0.0)
    return drop


class Attention(nn.Module):
    cfg: object  # the model section of the config
    decode_len: int = 0  # > 0: decode with a KV cache of this many slots (see cached_attention)
    deterministic: bool = True  # False: model.dropout on the attention probabilities

    @nn.compact
    def __call__(self, x_BxTxD, positions_BxT, segments_BxT=None, local=False):
        """`local`: this layer attends within model.sliding_window; a Python bool, or a traced
        bool when scanned layers mix local and global ones."""
        c = self.cfg
        H, G, K, D = c.num_heads, c.num_kv_heads or c.num_heads, head_dim(c), c.d_model
        param_dtype, dtype = jnp.dtype(c.param_dtype), jnp.dtype(c.dtype)

        def proj(name, heads, axis):
            return Projection((D,), (heads, K), ("embed", axis, "head_dim"),
                              c.use_bias or c.qkv_bias,
                              parametrization.hidden_init_std(c, c.init_std), param_dtype, dtype,
                              name=name)

        q = proj("query", H, "heads")(x_BxTxD)
        k = proj("key", G, "kv_heads")(x_BxTxD)
        v = proj("value", G, "kv_heads")(x_BxTxD)
        if c.qk_norm:  # over head_dim, before RoPE (Qwen 3, Gemma 3)
            q, k = Norm(c, name="query_norm")(q), Norm(c, name="key_norm")(k)
        q = constrain(q, ("batch", "act_len", "act_heads", None))
        k = constrain(k, ("batch", "act_len", "act_kv_heads", None))
        v = constrain(v, ("batch", "act_len", "act_kv_heads", None))
        rotate = POSITIONS[c.positions].rotate or (lambda x, positions, cfg, local: x)
        W = c.sliding_window
        static = isinstance(local, bool)

        kept = []  # the probabilities' dropout keep masks, when drawn outside a lax.cond
        if self.decode_len:
            q, k = rotate(q, positions_BxT, c, local), rotate(k, positions_BxT, c, local)
            window = (W if local else 0) if static else jnp.where(local, W, 0)
            out = cached_attention(self, q, k, v, positions_BxT, self.decode_len, c, window)
        else:
            backend = ATTENTION_BACKENDS[c.attention]
            extra = {}
            if c.dropout > 0 and not self.deterministic:
                extra["dropout"] = probs_dropout(c.dropout, self.make_rng("dropout"),
                                                 c.dropout_rng, kept if static else None)

            def attend(is_local):
                def run(q, k, v):
                    q, k = rotate(q, positions_BxT, c, is_local), rotate(k, positions_BxT, c, is_local)
                    return backend(q, k, v, segments_BxT, c, W if is_local else 0, **extra)
                return run

            # Scanned layers that mix local and global branch at run time; each branch keeps a
            # static window, so the blockwise backend still skips the blocks outside it.
            out = attend(local)(q, k, v) if static else jax.lax.cond(local, attend(True),
                                                                     attend(False), q, k, v)
        if kept:  # for capture_intermediates (tests)
            self.sow("intermediates", "probs_keep", tuple(kept))
        out = constrain(out, ("batch", "act_len", "act_heads", None))
        return Projection((H, K), (D,), ("heads", "head_dim", "embed"), c.use_bias,
                          parametrization.hidden_init_std(c, out_init_std(c)), param_dtype, dtype,
                          name="out")(out)
