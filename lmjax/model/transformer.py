"""The decoder: embeddings, a stack of pre-norm blocks (scanned or unrolled), final norm, LM head.

GPT-2 style (learned positions, LayerNorm, GELU, biases, tied head), LLaMA / Mistral / Qwen style
(RoPE, RMSNorm, SwiGLU, GQA, untied head, q/k/v biases, QK-norm, sliding windows) and Gemma
style (norms on the block outputs too, (1 + w) RMSNorm, scaled embeddings, GeGLU, soft-capped
logits, local and global layers) are config choices of this one module.

Which layers are local (attend within model.sliding_window) is model.local_layers: `all`,
`alternate` (even layers local, as Gemma 2), or one letter per layer, L (local) or G (global).
Scanned layers that mix both take their flag as a scanned input, so the stack stays one scan.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.model import aux, parametrization
from lmjax.model.attention import Attention
from lmjax.model.dropout import dropout
from lmjax.model.layers import Embed, Norm, Projection, constrain
from lmjax.model.mlp import MLP
from lmjax.model.moe import is_moe_layer
from lmjax.model.positions import POSITIONS

LOCAL, GLOBAL = "L", "G"


def local_flags(cfg) -> tuple:
    """Per layer: does it attend within model.sliding_window? (all False without a window)."""
    n, pattern = cfg.num_layers, cfg.local_layers
    if not cfg.sliding_window:
        return (False,) * n
    if pattern == "all":
        return (True,) * n
    if pattern == "alternate":
        return tuple(i % 2 == 0 for i in range(n))
    return tuple(ch == LOCAL for ch in pattern)


class Block(nn.Module):
    cfg: object  # the model section of the config
    decode_len: int = 0  # > 0: attention keeps a KV cache of this length ('cache' collection)
    local: bool = False  # this layer is local (static); a scanned flag, when given, overrides it
    mlp: str = ""  # the MLP kind of this layer ("" = cfg.mlp)
    deterministic: bool = True  # False: model.dropout where nanoGPT applies it

    @nn.compact
    def __call__(self, x_BxTxD, positions_BxT, segments_BxT, local=None):
        c = self.cfg
        local = self.local if local is None else local
        drop = lambda h: dropout(h, c.dropout, c.dropout_rng, self.deterministic)
        attn = Attention(c, decode_len=self.decode_len, deterministic=self.deterministic,
                         name="attn")
        h_BxTxD = attn(Norm(c, name="attn_norm")(x_BxTxD), positions_BxT, segments_BxT, local)
        if c.post_norms:  # Gemma: each branch's output is normalised before the residual add
            h_BxTxD = Norm(c, name="attn_post_norm")(h_BxTxD)
        x_BxTxD = x_BxTxD + drop(h_BxTxD)
        h_BxTxD = MLP(c, self.mlp, name="mlp")(Norm(c, name="mlp_norm")(x_BxTxD))
        if c.post_norms:
            h_BxTxD = Norm(c, name="mlp_post_norm")(h_BxTxD)
        x_BxTxD = constrain(x_BxTxD + drop(h_BxTxD), ("batch", "act_len", "act_embed"))
        return x_BxTxD, None


def remat_block(policy_name: str, scanned: bool):
    if policy_name == "none":
        return Block
    policy = None if policy_name == "full" else getattr(jax.checkpoint_policies, policy_name)
    # Inside scan, CSE across iterations cannot happen, so prevent_cse only costs speed there.
    return nn.remat(Block, policy=policy, prevent_cse=not scanned, static_argnums=())


class Transformer(nn.Module):
    """tokens (B, T) -> logits (B, T, vocab), in float32.

    `train=True` turns on model.dropout, which then needs a 'dropout' rng; flax folds each
    module's path into it, so every layer (and every scanned layer) draws its own mask.
    """

    cfg: object
    decode_len: int = 0  # > 0: incremental decoding with a KV cache (lmjax.infer.generate)

    @nn.compact
    def __call__(self, tokens_BxT, positions_BxT=None, segments_BxT=None, train: bool = False):
        c = self.cfg
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        B, T = tokens_BxT.shape
        if positions_BxT is None:
            positions_BxT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        embed = Embed(c, name="embed")
        x_BxTxD = embed(tokens_BxT)
        add_positions = POSITIONS[c.positions].embed
        if add_positions is not None:
            x_BxTxD = x_BxTxD + add_positions(self, c, positions_BxT, dtype)
        x_BxTxD = dropout(x_BxTxD, c.dropout, c.dropout_rng, deterministic=not train)
        x_BxTxD = constrain(x_BxTxD, ("batch", "act_len", "act_embed"))

        block = remat_block(c.remat_policy, c.scan_layers)
        flags = local_flags(c)
        if c.scan_layers:
            mixed = len(set(flags)) > 1
            in_axes = (nn.broadcast, nn.broadcast) + ((0,) if mixed else ())
            stack = nn.scan(block, variable_axes={"params": 0, "cache": 0, aux.COLLECTION: 0},
                            split_rngs={"params": True, "dropout": True},
                            in_axes=in_axes, length=c.num_layers,
                            metadata_params={nn.PARTITION_NAME: "layers"})
            extra = (jnp.asarray(np.array(flags)),) if mixed else ()
            x_BxTxD, _ = stack(c, self.decode_len, flags[0], deterministic=not train,
                               name="layers")(
                x_BxTxD, positions_BxT, segments_BxT, *extra)
        else:
            for i in range(c.num_layers):
                kind = "swiglu" if c.mlp == "moe" and not is_moe_layer(c, i) else c.mlp
                x_BxTxD, _ = block(c, self.decode_len, flags[i], kind, deterministic=not train,
                                   name=f"layer_{i}")(
                    x_BxTxD, positions_BxT, segments_BxT)

        x_BxTxD = Norm(c, name="final_norm")(x_BxTxD)
        if c.tie_embeddings:
            logits = embed.attend(x_BxTxD)
        else:
            logits = Projection((c.d_model,), (c.vocab_size,), ("embed", "vocab"), False,
                                c.init_std, param_dtype, dtype, name="lm_head")(x_BxTxD)
        logits = constrain(logits, ("batch", "act_len", "act_vocab"))
        logits = logits.astype(jnp.float32)
        if c.parametrization == "mup":
            logits = logits * parametrization.logit_multiplier(c)
        if c.final_logit_softcap:  # Gemma 2: cap * tanh(logits / cap)
            logits = c.final_logit_softcap * jnp.tanh(logits / c.final_logit_softcap)
        return logits
