"""Standard parametrization (sp) or μP (model.parametrization = "mup"), one code path.

μP follows Tensor Programs V (Yang et al. 2022), Table 3, for Adam-family optimizers, with the
width multiplier m = d_model / model.mup_base_width. It assumes d_ff and num_heads x head_dim
grow with d_model. What changes under mup, everything else being sp:
  - hidden matrices (the attention projections and MLP kernels: logical axes "embed" with
    heads/kv_heads/head_dim/mlp) are initialised with std / sqrt(m) (variance ∝ 1/fan_in);
  - their Adam, Lion or Adafactor learning rate is lr / m (lmjax.train.optim applies this);
  - the output logits are multiplied by 1/m (tied or untied head alike);
  - attention scores use sqrt(K0) / K instead of 1/sqrt(K): 1/K up to the constant that makes the
    base width equal sp. K0 is the head dim at the base width (K / m when head_dim is derived from
    d_model, K itself when model.head_dim is set and therefore does not grow);
  - the embedding tables, norms and biases keep their init and learning rate.
At d_model == mup_base_width every factor is 1, so a mup model at its base width is the sp model.

Untie the embeddings for μP (model.tie_embeddings = False). A tied table is the input embedding
(init and lr unscaled) and the readout (logits times 1/m) at once, and Adam's step on it follows
the input path's gradient, which is m times the readout's. On Tiny Shakespeare at width 256 over
base 32 (experiments/mup_transfer.py, 200 steps, lr 5e-3) tied reached eval loss 2.578, untied
2.480.

With optim.name = "muon" the hidden matrices are Muon's, whose orthogonalised update is already
scaled to the matrix's shape (sqrt(max(1, fan_out / fan_in)), a spectral-norm step independent of
width), so their 1/m learning-rate factor is not applied; the init, logit and attention factors
are, and the AdamW-updated tables are unscaled under μP anyway.
"""
import math

PARAMETRIZATIONS = ("sp", "mup")
# Logical axes that grow with width inside the network (not the vocabulary, not the layer stack).
HIDDEN_AXES = ("heads", "kv_heads", "head_dim", "mlp")


def width_mult(cfg) -> float:
    """m = d_model / mup_base_width under mup; 1 under sp."""
    if cfg.parametrization != "mup":
        return 1.0
    return cfg.d_model / cfg.mup_base_width


def hidden_init_std(cfg, std: float) -> float:
    return std / math.sqrt(width_mult(cfg))


def logit_multiplier(cfg) -> float:
    return 1.0 / width_mult(cfg)


def query_multiplier(cfg, head_dim: int) -> float:
    """Factor on the queries that turns the backends' 1/sqrt(K) score scale into sqrt(K0)/K."""
    if cfg.parametrization != "mup":
        return 1.0
    base_head_dim = head_dim if cfg.head_dim else head_dim / width_mult(cfg)
    return math.sqrt(base_head_dim / head_dim)


def is_hidden_matrix(axes) -> bool:
    """A kernel mapping the residual width to a hidden width or back, by its logical axis names."""
    names = [a for a in axes if a not in (None, "layers")]
    return "embed" in names and "vocab" not in names and any(a in HIDDEN_AXES for a in names)
