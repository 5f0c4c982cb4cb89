"""Feed-forward blocks by name (model.mlp): GELU MLP (GPT-2), SwiGLU (LLaMA), GeGLU (Gemma),
MoE (moe.py).

An entry of MLPS is a function (module, model cfg, x (B, T, D)) -> (B, T, D) that creates its
parameters through `module`; a new variant is one entry.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.model.layers import Projection, constrain, out_init_std
from lmjax.model.parametrization import hidden_init_std
from lmjax.model.moe import moe_mlp

UP_AXES, DOWN_AXES = ("embed", "mlp"), ("mlp", "embed")


def _proj(cfg, name, in_dim, out_dim, axes, std):
    return Projection((in_dim,), (out_dim,), axes, cfg.use_bias, hidden_init_std(cfg, std),
                      jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype), name=name)


def gelu_mlp(approximate: bool):
    def apply(module, cfg, x_BxTxD):
        h_BxTxF = _proj(cfg, "fc_in", cfg.d_model, cfg.d_ff, UP_AXES, cfg.init_std)(x_BxTxD)
        h_BxTxF = jax.nn.gelu(h_BxTxF, approximate=approximate)
        h_BxTxF = constrain(h_BxTxF, ("batch", "act_len", "act_mlp"))
        return _proj(cfg, "fc_out", cfg.d_ff, cfg.d_model, DOWN_AXES, out_init_std(cfg))(h_BxTxF)
    return apply


def gated_mlp(activation):
    """down(activation(gate(x)) * up(x)): SwiGLU with silu, GeGLU with tanh-GELU."""
    def apply(module, cfg, x_BxTxD):
        gate = _proj(cfg, "gate", cfg.d_model, cfg.d_ff, UP_AXES, cfg.init_std)(x_BxTxD)
        up = _proj(cfg, "up", cfg.d_model, cfg.d_ff, UP_AXES, cfg.init_std)(x_BxTxD)
        h_BxTxF = constrain(activation(gate) * up, ("batch", "act_len", "act_mlp"))
        return _proj(cfg, "down", cfg.d_ff, cfg.d_model, DOWN_AXES, out_init_std(cfg))(h_BxTxF)
    return apply


swiglu_mlp = gated_mlp(jax.nn.silu)


MLPS = {
    "gelu": gelu_mlp(approximate=True),  # tanh approximation, as GPT-2
    "gelu_exact": gelu_mlp(approximate=False),
    "swiglu": swiglu_mlp,
    "geglu": gated_mlp(lambda x: jax.nn.gelu(x, approximate=True)),  # Gemma
    "moe": moe_mlp,  # routed SwiGLU experts; model.moe.every > 1 leaves other layers "swiglu"
}


class MLP(nn.Module):
    cfg: object  # the model section of the config
    kind: str = ""  # a name in MLPS; "" = cfg.mlp

    @nn.compact
    def __call__(self, x_BxTxD):
        return MLPS[self.kind or self.cfg.mlp](self, self.cfg, x_BxTxD)
