"""Matmul FLOPs of the traced train step, every loop iteration and every recomputed matmul counted.

XLA's cost analysis counts a while loop's body once, so a step whose layers (or microbatches)
are a `scan` reports a fraction of its FLOPs. The step's jaxpr still knows each scan's length,
and after differentiation it holds the matmuls that remat recomputes for the backward pass:
counting dot_general there, times the lengths of the scans around it, gives the matmul FLOPs
the step executes. The count is global; divided by the devices it is per device, as the work
is split over the mesh.
"""
import math

from jax.extend.core import jaxprs_in_params


def _dot_flops(eqn) -> int:
    (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contracting)


def _times(eqn) -> int:
    """How many times an equation runs the jaxprs it holds, per run of the equation."""
    name = eqn.primitive.name
    if name == "scan":
        return eqn.params["length"]
    if name == "shard_map":
        # The body sees one device's shard along the manual axes and runs on each of them.
        mesh, manual = eqn.params["mesh"], eqn.params.get("manual_axes") or ()
        return math.prod(mesh.shape[a] for a in manual)
    return 1  # a while loop's trip count is not static: its body counts once, as in XLA


def matmul_flops(jaxpr, once: bool = False) -> int:
    """Global dot_general FLOPs of a (closed) jaxpr; with `once`, each loop body counts once."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            total += _dot_flops(eqn)
            continue
        inner = [matmul_flops(j, once) for j in jaxprs_in_params(eqn.params)]
        if not inner:
            continue
        if eqn.primitive.name == "cond":  # one branch runs; the costliest bounds it
            total += max(inner)
        elif eqn.primitive.name == "while":  # cond_jaxpr and body_jaxpr: the body
            total += sum(inner)
        else:
            times = 1 if once and eqn.primitive.name == "scan" else _times(eqn)
            total += times * sum(inner)
    return total
