"""Learning-rate schedules by name: optim.schedule -> (optim config, total steps) -> optax schedule.

Every schedule warms up as nanoGPT does: step s < warmup_steps uses lr * (s + 1) / (warmup + 1), so
the first step already moves the weights (lr / (warmup + 1), not 0) and step `warmup` is at peak.
The horizon is optim.decay_steps, or train.steps when that is 0; past it the LR stays at min_lr.

`wsd` (warmup-stable-decay, as MiniCPM and DeepSeek train) holds the peak LR until the decay
starts, then decays to min_lr by the horizon. The decay starts at optim.decay_start when that is
set, else over the last optim.decay_fraction of the horizon. Because the stable phase does not
depend on the horizon, a run with decay_start=D and train.steps=H branched from any stable-phase
checkpoint at step <= D continues exactly as if it had been trained with that schedule from the
start: one long stable run per model size, one short cooldown per token budget.
"""
import jax.numpy as jnp
import optax

DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


def warmup(o) -> optax.Schedule:
    return optax.linear_schedule(o.lr / (o.warmup_steps + 1), o.lr, o.warmup_steps)


def horizon(o, total_steps: int) -> int:
    return max(o.decay_steps or total_steps, o.warmup_steps + 1)


def constant_schedule(o, total_steps: int) -> optax.Schedule:
    return optax.join_schedules([warmup(o), optax.constant_schedule(o.lr)], [o.warmup_steps])


def linear_schedule(o, total_steps: int) -> optax.Schedule:
    decay = optax.linear_schedule(o.lr, o.min_lr, horizon(o, total_steps) - o.warmup_steps)
    return optax.join_schedules([warmup(o), decay], [o.warmup_steps])


def cosine_schedule(o, total_steps: int) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(o.lr / (o.warmup_steps + 1), o.lr, o.warmup_steps,
                                              horizon(o, total_steps), o.min_lr)


def wsd_decay_start(o, total_steps: int) -> int:
    """The first step of the decay phase: optim.decay_start, else the last decay_fraction."""
    if o.decay_start > 0:
        return o.decay_start
    end = horizon(o, total_steps)
    return max(o.warmup_steps, end - round(o.decay_fraction * end))


def decay_curve(shape: str, lr: float, min_lr: float, length: int) -> optax.Schedule:
    """lr -> min_lr over `length` steps, then min_lr."""
    length = max(length, 1)
    if shape == "linear":
        return optax.linear_schedule(lr, min_lr, length)
    if shape == "cosine":
        return optax.cosine_decay_schedule(lr, length, alpha=min_lr / lr)

    def one_minus_sqrt(count):  # Hägele et al. 2024: lr * (1 - sqrt(t)), t the decay's fraction
        frac = jnp.clip(count / length, 0.0, 1.0)
        return min_lr + (lr - min_lr) * (1.0 - jnp.sqrt(frac))
    return one_minus_sqrt


def wsd_schedule(o, total_steps: int) -> optax.Schedule:
    start = wsd_decay_start(o, total_steps)
    decay = decay_curve(o.decay_shape, o.lr, o.min_lr, horizon(o, total_steps) - start)
    return optax.join_schedules([warmup(o), optax.constant_schedule(o.lr), decay],
                                [o.warmup_steps, start])


SCHEDULES = {
    "cosine": cosine_schedule,
    "linear": linear_schedule,
    "constant": constant_schedule,
    "wsd": wsd_schedule,
}


def make_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
    return SCHEDULES[optim_cfg.schedule](optim_cfg, total_steps)
