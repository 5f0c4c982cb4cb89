"""Logical->mesh rules from the config, and the shardings of state and batches."""
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def rules(cfg):
    return tuple((name, tuple(axes) if isinstance(axes, list) else axes)
                 for name, axes in cfg.mesh.rules)


def logical_to_sharding(abstract_boxed_tree, mesh: Mesh, logical_rules):
    """NamedShardings for a tree of (abstract) values carrying flax logical axis metadata."""
    specs = nn.get_partition_spec(abstract_boxed_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, logical_rules)


def batch_sharding(mesh: Mesh, logical_rules) -> NamedSharding:
    spec = nn.logical_to_mesh_axes(("batch", None), logical_rules)
    return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(host_batch: dict, sharding: NamedSharding) -> dict:
    """Host-local numpy rows -> one global jax.Array per field, sharded over data x fsdp."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in host_batch.items()}


def bytes_per_device(tree) -> int:
    """Largest per-device footprint of a tree of sharded arrays (or ShapeDtypeStructs)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        shape = leaf.shape
        if sharding is not None:
            shape = sharding.shard_shape(shape)
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total
