"""Auxiliary losses and metrics that layers hand out of the model through flax `sow`.

A layer calls `report(module, loss, metrics)`. The train step applies the model with COLLECTION
mutable and `collect` turns what was sown into (a scalar added to the training objective, a dict
of per-step metrics). Every reported loss is summed (a layer scales its own share); a metric
reported by several layers is averaged over them, except names ending in _max / _min, which take
the maximum / minimum. Applied without the collection mutable (eval, generation), `sow` is a
no-op, so those paths see only the logits.
"""
import jax.numpy as jnp

COLLECTION = "intermediates"
LOSS, METRICS = "aux_loss", "aux_metrics"


def report(module, loss, metrics: dict):
    module.sow(COLLECTION, LOSS, loss)
    module.sow(COLLECTION, METRICS, metrics)


def _sown(tree, name, out):
    """Every value sown under `name`, wherever in the module tree (scan stacks them by layer)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == name:
                out.extend(value)  # sow appends to a tuple
            else:
                _sown(value, name, out)
    return out


def collect(variables) -> tuple:
    """(summed auxiliary loss, {metric: value}) from the mutated collections of an apply."""
    tree = dict(variables).get(COLLECTION, {})
    losses = _sown(tree, LOSS, [])
    total = sum((jnp.sum(x) for x in losses), jnp.zeros((), jnp.float32))
    per_name = {}
    for metrics in _sown(tree, METRICS, []):
        for name, value in metrics.items():
            per_name.setdefault(name, []).append(jnp.ravel(value))
    return total, {name: reduce(name, jnp.concatenate(v)) for name, v in per_name.items()}


def reduce(name: str, values):
    """Combines one metric's values over layers, microbatches or logged steps (numpy or jax)."""
    kind = "max" if name.endswith("_max") else "min" if name.endswith("_min") else "mean"
    return getattr(values, kind)()
