"""The optimizer from the config: a named optimizer and LR schedule, clipping, weight-decay mask.

Both kinds are registries (name -> builder): OPTIMIZERS here, SCHEDULES in lmjax.train.schedules.
A new optimizer or schedule is one entry; validation reads the allowed names from them.

Parameter groups come from the parameters' logical axis names, never from name patterns: the
hidden matrices (lmjax.model.parametrization.is_hidden_matrix) are the ones Muon orthogonalises
and μP scales; embeddings, the LM head, norms and biases go to AdamW under Muon and keep their LR
under μP.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lmjax.model import build_model, parametrization
from lmjax.train.schedules import SCHEDULES, make_schedule  # noqa: F401  (the registry)

NO_DECAY_LEAVES = ("bias", "scale")
EMBEDDING_LEAVES = ("embedding", "pos_embed")


def decay_mask(params, decay_embeddings: bool):
    """True where weight decay applies: matrices, not norms or biases (nor embeddings, by config)."""
    def decays(path, _):
        name = [p.key for p in path if hasattr(p, "key")][-1]
        if name in NO_DECAY_LEAVES:
            return False
        return decay_embeddings or name not in EMBEDDING_LEAVES
    return jax.tree_util.tree_map_with_path(decays, params)


def param_axes(cfg):
    """The parameter tree with each leaf's logical axis names (a tuple), from shapes only."""
    from lmjax.train.state import abstract_params
    boxed = abstract_params(build_model(cfg.model), cfg)
    is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
    return jax.tree.map(lambda b: tuple(b.names), boxed, is_leaf=is_box)


def hidden_matrices(axes):
    return jax.tree.map(parametrization.is_hidden_matrix, axes,
                        is_leaf=lambda x: isinstance(x, tuple))


def scale_leaves(factors) -> optax.GradientTransformation:
    """Multiplies each update by its leaf's constant factor (a tree of floats like the params)."""
    def scale(updates, params=None):
        return jax.tree.map(lambda u, f: u if f == 1.0 else u * jnp.asarray(f, u.dtype),
                            updates, factors)
    return optax.stateless(scale)


def adamw(o, lr, mask, axes) -> optax.GradientTransformation:
    return optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=mask)


def lion(o, lr, mask, axes) -> optax.GradientTransformation:
    """Lion (Chen et al. 2023): sign of an interpolated momentum; b1/b2 are its two betas."""
    return optax.lion(lr, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay, mask=mask)


def adafactor(o, lr, mask, axes) -> optax.GradientTransformation:
    """Adafactor with factored second moments for matrices of both dims >= 128, absolute LR.

    optax adds its weight decay after the LR, so the rate is lr(step) * weight_decay: decoupled
    decay with AdamW's meaning of optim.weight_decay.
    """
    return optax.adafactor(lr, multiply_by_parameter_scale=False,
                           weight_decay_rate=lambda count: lr(count) * o.weight_decay,
                           weight_decay_mask=mask)


def muon_dimensions(shape_axes):
    """Muon's matrix view of a kernel: the "embed" axis is its input when first, else its output;
    the layer stack (scan) is a batch axis."""
    names = list(shape_axes)
    positions = [i for i, a in enumerate(names) if a != "layers"]
    embed = names.index("embed")
    if embed == positions[0]:
        return optax.contrib.MuonDimensionNumbers(reduction_axis=embed,
                                                  output_axis=tuple(positions[1:]))
    return optax.contrib.MuonDimensionNumbers(reduction_axis=tuple(positions[:-1]),
                                              output_axis=embed)


def muon_shape_scale(shape, dims) -> float:
    """Keller Jordan's width scaling of the orthogonal update: sqrt(max(1, fan_out / fan_in))."""
    as_tuple = lambda a: (a,) if isinstance(a, int) else a
    fan_in = 1
    for i in as_tuple(dims.reduction_axis):
        fan_in *= shape[i]
    fan_out = 1
    for i in as_tuple(dims.output_axis):
        fan_out *= shape[i]
    return max(1.0, fan_out / fan_in) ** 0.5


def muon(o, lr, mask, axes) -> optax.GradientTransformation:
    """optax.contrib's Muon on the hidden matrices at optim.muon_lr (on optim.lr's schedule), AdamW
    at optim.lr on everything else, as modded-nanogpt and Moonlight train."""
    hidden = hidden_matrices(axes)
    labels = jax.tree.map(lambda h: "muon" if h else "adam", hidden)
    dims = jax.tree.map(lambda h, ax: muon_dimensions(ax) if h else optax.MaskedNode(),
                        hidden, axes, is_leaf=lambda x: isinstance(x, tuple))
    muon_lr = lambda count: lr(count) * (o.muon_lr / o.lr)

    def width_scale(updates, params=None):
        is_dims = lambda x: isinstance(x, optax.contrib.MuonDimensionNumbers)
        return jax.tree.map(lambda d, u: u * muon_shape_scale(u.shape, d), dims, updates,
                            is_leaf=is_dims)

    orthogonal = optax.chain(
        optax.contrib.scale_by_muon(beta=o.muon_beta, nesterov=True, weight_dimension_numbers=dims),
        optax.stateless(width_scale),
        optax.add_decayed_weights(o.weight_decay),
        optax.scale_by_learning_rate(muon_lr))
    return optax.partition({"muon": orthogonal, "adam": adamw(o, lr, mask, axes)}, labels)


# optim.name -> (optim config, schedule, weight-decay mask fn, logical axes tree or None) ->
# optax transformation. Clipping and μP's LR factors are applied around it by make_optimizer.
OPTIMIZERS = {
    "adamw": adamw,
    "adafactor": adafactor,
    "lion": lion,
    "muon": muon,
}
# Optimizers that need the parameters' logical axis names to form their groups.
NEEDS_AXES = ("muon",)


def make_optimizer(cfg) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(transformation, schedule): the step reports the LR from the same schedule it applies."""
    o = cfg.optim
    lr = make_schedule(o, cfg.train.steps)
    mup = cfg.model.parametrization == "mup"
    axes = param_axes(cfg) if (mup or o.name in NEEDS_AXES) else None
    parts = []
    if o.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(o.grad_clip))
    parts.append(OPTIMIZERS[o.name](o, lr, lambda p: decay_mask(p, o.decay_embeddings), axes))
    if mup and o.name != "muon":
        factor = 1.0 / parametrization.width_mult(cfg.model)
        parts.append(scale_leaves(jax.tree.map(lambda h: factor if h else 1.0,
                                               hidden_matrices(axes))))
    return optax.chain(*parts), lr
