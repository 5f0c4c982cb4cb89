"""Embeddings, norms and the dense projection every module uses, all with logical axis names."""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def constrain(x, names: Sequence[str | None]):
    """Pins an activation's sharding by logical names (a no-op outside a mesh)."""
    return nn.with_logical_constraint(x, tuple(names))


def logical_param(module: nn.Module, name: str, shape, axes, init, dtype):
    return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape), dtype)


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

    vocab_size: int
    d_model: int
    init_std: float
    param_dtype: jnp.dtype
    dtype: jnp.dtype

    def setup(self):
        self.embedding = logical_param(self, "embedding", (self.vocab_size, self.d_model),
                                       ("vocab", "embed"), nn.initializers.normal(self.init_std),
                                       self.param_dtype)

    def __call__(self, tokens_BxT):
        return jnp.take(self.embedding, tokens_BxT, axis=0).astype(self.dtype)

    def attend(self, x_BxTxD):
        B, T, D = x_BxTxD.shape
        logits = x_BxTxD.reshape(B * T, D) @ self.embedding.astype(self.dtype).T
        return logits.reshape(B, T, self.vocab_size)


class Norm(nn.Module):
    """LayerNorm or RMSNorm, computed in float32 whatever the compute dtype."""

    kind: str
    eps: float
    use_bias: bool
    param_dtype: jnp.dtype
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = logical_param(self, "scale", (d,), ("norm",), nn.initializers.ones, self.param_dtype)
        x32 = x.astype(jnp.float32)
        if self.kind == "layernorm":
            mean = x32.mean(-1, keepdims=True)
            x32 = x32 - mean
        y = x32 * jax.lax.rsqrt((x32 * x32).mean(-1, keepdims=True) + self.eps)
        y = y * scale.astype(jnp.float32)
        if self.kind == "layernorm" and self.use_bias:
            bias = logical_param(self, "bias", (d,), ("norm",), nn.initializers.zeros,
                                 self.param_dtype)
            y = y + bias.astype(jnp.float32)
        return y.astype(self.dtype)
