"""Model construction from the config's model section."""
from lmjax.model.transformer import Transformer


def build_model(model_cfg) -> Transformer:
    return Transformer(model_cfg)


def flops_per_token(model_cfg, seq_len: int, num_params_non_embedding: int) -> float:
    """Training FLOPs per token: 6·N + 12·L·d·T (PaLM appendix B, as nanoGPT).

    N counts parameters that take part in matmuls per token: everything but the position table
    and (when untied) the input embedding table; the LM head's matmul is included.
    """
    c = model_cfg
    return 6.0 * num_params_non_embedding + 12.0 * c.num_layers * c.d_model * seq_len
