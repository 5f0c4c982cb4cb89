"""Devices: the mesh from the config, logical->mesh rules, shardings, jax.distributed."""
