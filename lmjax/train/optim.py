"""The optimizer from the config: a named optimizer and LR schedule, clipping, weight-decay mask.

Both kinds are registries (name -> builder). A new optimizer or schedule is one entry here;
validation reads the allowed names from OPTIMIZERS and SCHEDULES.
"""
import jax
import optax

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


def adamw(o, lr: optax.Schedule, mask) -> optax.GradientTransformation:
    return optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=mask)


# optim.name -> (optim config, schedule, weight-decay mask fn) -> optax transformation.
# Clipping is applied before every optimizer by make_optimizer.
OPTIMIZERS = {
    "adamw": adamw,
}


def make_optimizer(cfg) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(transformation, schedule): the step reports the LR from the same schedule it applies."""
    o = cfg.optim
    lr = make_schedule(o, cfg.train.steps)
    parts = []
    if o.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(o.grad_clip))
    parts.append(OPTIMIZERS[o.name](o, lr, lambda p: decay_mask(p, o.decay_embeddings)))
    return optax.chain(*parts), lr
