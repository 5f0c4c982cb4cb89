"""Embeddings, norms and the dense projection every module uses, all with logical axis names."""
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def constrain(x, names: Sequence[str | None]):
    """Pins an activation's sharding by logical names (a no-op outside a mesh)."""
    return nn.with_logical_constraint(x, tuple(names))


def logical_param(module: nn.Module, name: str, shape, axes, init, dtype):
    return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape), dtype)


def out_init_std(cfg) -> float:
    """GPT-2's scaled init of the projections that write into the residual stream."""
    return cfg.init_std / math.sqrt(2 * cfg.num_layers)


class Projection(nn.Module):
    """y = x @ W (+ b) with W of shape in_shape + out_shape and a logical name per dimension.

    Inputs are flattened to 2-D before the matmul: with 3-D inputs XLA:CPU adds a transposing copy
    to every weight-gradient matmul, which costs ~20% of a small model's step.
    """

    in_shape: tuple
    out_shape: tuple
    axes: tuple
    use_bias: bool
    init_std: float
    param_dtype: jnp.dtype
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        n_in = len(self.in_shape)
        kernel = logical_param(self, "kernel", self.in_shape + self.out_shape, self.axes,
                               nn.initializers.normal(self.init_std), self.param_dtype)
        lead = x.shape[:-n_in]
        fan_in, fan_out = 1, 1
        for d in self.in_shape:
            fan_in *= d
        for d in self.out_shape:
            fan_out *= d
        y = x.reshape(-1, fan_in).astype(self.dtype) @ kernel.reshape(fan_in, fan_out).astype(self.dtype)
        if self.use_bias:
            bias = logical_param(self, "bias", self.out_shape, self.axes[n_in:],
                                 nn.initializers.zeros, self.param_dtype)
            y = y + bias.reshape(fan_out).astype(self.dtype)
        return y.reshape(lead + self.out_shape)


class Embed(nn.Module):
    """Token embedding; `attend` reuses the table as a tied LM head."""

    cfg: object  # the model section of the config

    def setup(self):
        c = self.cfg
        self.embedding = logical_param(self, "embedding", (c.vocab_size, c.d_model),
                                       ("vocab", "embed"), nn.initializers.normal(c.init_std),
                                       jnp.dtype(c.param_dtype))

    def __call__(self, tokens_BxT):
        dtype = jnp.dtype(self.cfg.dtype)
        x = jnp.take(self.embedding, tokens_BxT, axis=0).astype(dtype)
        if self.cfg.scale_embeddings:  # Gemma: embeddings times sqrt(d_model)
            x = x * jnp.asarray(math.sqrt(self.cfg.d_model), dtype)
        return x

    def attend(self, x_BxTxD):
        B, T, D = x_BxTxD.shape
        dtype = jnp.dtype(self.cfg.dtype)
        logits = x_BxTxD.reshape(B * T, D) @ self.embedding.astype(dtype).T
        return logits.reshape(B, T, self.cfg.vocab_size)


def layer_norm(x32, eps):
    x32 = x32 - x32.mean(-1, keepdims=True)
    return x32 * jax.lax.rsqrt((x32 * x32).mean(-1, keepdims=True) + eps)


def rms_norm(x32, eps):
    return x32 * jax.lax.rsqrt((x32 * x32).mean(-1, keepdims=True) + eps)


# model.norm -> (x in float32, eps) -> normalised x, before scale (and LayerNorm's bias).
NORMS = {
    "layernorm": layer_norm,
    "rmsnorm": rms_norm,
    "gemma_rmsnorm": rms_norm,  # scaled by (1 + weight), weight initialised to 0 (Gemma)
}
# Norms that carry a bias when model.use_bias is set.
NORMS_WITH_BIAS = ("layernorm",)
# Norms whose learned scale is stored as an offset from this value.
SCALE_OFFSET = {"gemma_rmsnorm": 1.0}


class Norm(nn.Module):
    """model.norm by name, computed in float32 whatever the compute dtype."""

    cfg: object  # the model section of the config

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        d, param_dtype = x.shape[-1], jnp.dtype(c.param_dtype)
        offset = SCALE_OFFSET.get(c.norm, 0.0)
        init = nn.initializers.zeros if offset else nn.initializers.ones
        scale = logical_param(self, "scale", (d,), ("norm",), init, param_dtype)
        y = NORMS[c.norm](x.astype(jnp.float32), c.norm_eps) * (offset + scale.astype(jnp.float32))
        if c.norm in NORMS_WITH_BIAS and c.use_bias:
            bias = logical_param(self, "bias", (d,), ("norm",), nn.initializers.zeros, param_dtype)
            y = y + bias.astype(jnp.float32)
        return y.astype(jnp.dtype(c.dtype))
