"""The device mesh from the config. Its axes are one tuple that everything iterates over."""
import math

import jax
import numpy as np
from jax.sharding import Mesh

from lmjax.errors import ConfigError

# Mesh axes in device order. A new axis is one entry here plus a `mesh.<name>` config field.
MESH_AXES = ("data", "expert", "fsdp", "tensor")
# Axes a global batch's rows are split over. The expert axis carries batch rows too (as in
# MaxText): outside the MoE layers it is one more data-parallel axis.
BATCH_AXES = ("data", "expert", "fsdp")


class MeshError(ConfigError):
    """A mesh shape that does not fit the devices; the message names the fields to change."""


def mesh_shape(cfg, num_devices: int) -> dict:
    """{axis: size} with the one -1 entry (if any) resolved against the device count."""
    sizes = {axis: cfg.mesh[axis] for axis in MESH_AXES}
    for axis, size in sizes.items():
        if size == 0 or size < -1:
            raise MeshError(f"mesh.{axis}={size}: must be a positive size or -1 "
                            "(all remaining devices)")
    free = [axis for axis, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise MeshError(f"mesh: only one axis may be -1, got {', '.join('mesh.' + a for a in free)}")
    known = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if num_devices % known:
            raise MeshError(f"mesh.{free[0]}=-1: {num_devices} devices are not divisible by "
                            f"the other axes' product {known}")
        sizes[free[0]] = num_devices // known
    product = math.prod(sizes.values())
    if product != num_devices:
        names = "*".join(MESH_AXES)
        values = "*".join(str(sizes[a]) for a in MESH_AXES)
        raise MeshError(f"mesh: {names} = {values} = {product}, but {num_devices} devices are "
                        f"present; make the product {num_devices} or set one axis to -1")
    return sizes


def make_mesh(cfg, devices=None) -> Mesh:
    """A mesh over all devices with the axes of MESH_AXES; one CPU is a 1x1x1x1 mesh, the same path."""
    devices = jax.devices() if devices is None else devices
    sizes = mesh_shape(cfg, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    try:
        # Places neighbouring devices on the same axis where the hardware topology allows.
        return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
        return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


def batch_shards(mesh: Mesh) -> int:
    """How many ways a global batch's rows are split."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def describe(mesh: Mesh) -> str:
    return " x ".join(f"{name}={size}" for name, size in mesh.shape.items())
