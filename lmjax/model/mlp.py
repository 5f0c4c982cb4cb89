"""Feed-forward blocks: GELU MLP (GPT-2) and SwiGLU (LLaMA)."""
import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.model.layers import Projection, constrain


class MLP(nn.Module):
    d_model: int
    d_ff: int
    kind: str  # gelu (tanh approximation) | gelu_exact | swiglu
    use_bias: bool
    init_std: float
    out_init_std: float
    param_dtype: jnp.dtype
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x_BxTxD):
        def proj(name, in_dim, out_dim, axes, std):
            return Projection((in_dim,), (out_dim,), axes, self.use_bias, std, self.param_dtype,
                              self.dtype, name=name)

        up_axes, down_axes = ("embed", "mlp"), ("mlp", "embed")
        if self.kind == "swiglu":
            gate = proj("gate", self.d_model, self.d_ff, up_axes, self.init_std)(x_BxTxD)
            up = proj("up", self.d_model, self.d_ff, up_axes, self.init_std)(x_BxTxD)
            h_BxTxF = jax.nn.silu(gate) * up
        else:
            h_BxTxF = proj("fc_in", self.d_model, self.d_ff, up_axes, self.init_std)(x_BxTxD)
            h_BxTxF = jax.nn.gelu(h_BxTxF, approximate=self.kind == "gelu")
        h_BxTxF = constrain(h_BxTxF, ("batch", "act_len", "act_mlp"))
        name = "down" if self.kind == "swiglu" else "fc_out"
        return proj(name, self.d_ff, self.d_model, down_axes, self.out_init_std)(h_BxTxF)
