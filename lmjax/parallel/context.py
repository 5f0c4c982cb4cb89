"""The mesh and the logical rules in force while tracing, so sharding constraints resolve."""
import contextlib

import flax.linen as nn
import jax


@contextlib.contextmanager
def context(mesh, rules):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield
