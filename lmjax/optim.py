"""The optimizer from the config: AdamW, warmup + decay schedule, clipping, weight-decay mask."""
import jax
import optax

NO_DECAY_LEAVES = ("bias", "scale")
EMBEDDING_LEAVES = ("embedding", "pos_embed")


def schedule(optim_cfg, total_steps: int) -> optax.Schedule:
    o = optim_cfg
    decay_steps = max(o.decay_steps or total_steps, o.warmup_steps + 1)
    if o.schedule == "constant":
        return optax.join_schedules([optax.linear_schedule(0.0, o.lr, o.warmup_steps),
                                     optax.constant_schedule(o.lr)], [o.warmup_steps])
    if o.schedule == "linear":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, o.lr, o.warmup_steps),
             optax.linear_schedule(o.lr, o.min_lr, decay_steps - o.warmup_steps)],
            [o.warmup_steps])
    return optax.warmup_cosine_decay_schedule(0.0, o.lr, o.warmup_steps, decay_steps, o.min_lr)


def decay_mask(params, decay_embeddings: bool):
    """True where weight decay applies: matrices, not norms or biases (nor embeddings, by config)."""
    def decays(path, _):
        name = [p.key for p in path if hasattr(p, "key")][-1]
        if name in NO_DECAY_LEAVES:
            return False
        return decay_embeddings or name not in EMBEDDING_LEAVES
    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(cfg) -> optax.GradientTransformation:
    o = cfg.optim
    lr = schedule(o, cfg.train.steps)
    parts = []
    if o.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(o.grad_clip))
    parts.append(optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                             mask=lambda p: decay_mask(p, o.decay_embeddings)))
    return optax.chain(*parts)
