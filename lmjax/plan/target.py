"""What the planner compiles for: a TPU slice by name or topology, or N fake CPU devices.

    v5e-256, v5p-128, v4-64, v6e-16   Cloud TPU accelerator types (v4/v5p count TensorCores,
                                      two per chip; jax drives each chip as one device)
    v5e:16x16, v5p:4x4x8              a libtpu topology: chips along each torus axis
    cpu:8                             8 host-platform devices on this machine

Parsing needs no jax, so a bad target is one line before anything is imported or compiled.
"""
import dataclasses
import math
import os
import re

from lmjax.errors import UsageError
from lmjax.plan.chips import CHIPS, Chip, chip

EXAMPLES = "v5e-256, v5p-128, v4-64, v6e-256, v5e:16x16 or cpu:8"


@dataclasses.dataclass(frozen=True)
class Target:
    spec: str
    platform: str  # tpu | cpu
    num_devices: int
    num_slices: int = 1
    chip: Chip | None = None
    topology: str = ""  # libtpu's name, e.g. v5e:16x16 (one slice)
    shape: tuple = ()

    def describe(self) -> str:
        if self.platform == "cpu":
            return f"{self.num_devices} CPU device(s) (cpu:{self.num_devices})"
        slices = f" x {self.num_slices} slices" if self.num_slices > 1 else ""
        return (f"{self.chip.name} {self.topology}{slices}: {self.num_devices} chips "
                f"({self.spec})")


def _shape_for(chips: int, dims: int) -> tuple:
    """The usual slice shape of a power-of-two chip count: as cube- (or square-) like as can be.

    v5e-8 is 2x4, v5e-256 16x16; v5p-128 (64 chips) 4x4x4, v5p-256 4x4x8, v4-8 (4 chips) 2x2x1.
    """
    k = int(math.log2(chips))
    if dims == 2:
        return (2 ** (k // 2), 2 ** (k - k // 2))
    if chips == 4:
        return (2, 2, 1)
    base, extra = divmod(k, 3)
    return tuple(2 ** (base + (1 if i >= 3 - extra else 0)) for i in range(3))


def parse(spec: str, num_slices: int = 1) -> Target:
    """A Target from `spec`; UsageError naming --target and the forms it takes otherwise."""
    spec = spec.strip()
    if num_slices < 1:
        raise UsageError(f"--num_slices={num_slices}: must be >= 1")
    cpu = re.fullmatch(r"cpu:(\d+)", spec)
    if cpu:
        n = int(cpu.group(1))
        if n < 1:
            raise UsageError(f"--target={spec}: needs at least one device, e.g. cpu:8")
        if num_slices != 1:
            raise UsageError("--num_slices: only TPU targets have slices")
        return Target(spec, "cpu", n)
    topo = re.fullmatch(r"([a-z0-9]+):(\d+(?:x\d+){1,2})", spec)
    named = re.fullmatch(r"([a-z0-9]+)-(\d+)", spec)
    generation = (topo or named).group(1) if (topo or named) else ""
    facts = chip(generation)
    if facts is None:
        raise UsageError(f"--target={spec}: unknown target; use a TPU slice of "
                         f"{', '.join(CHIPS)} such as {EXAMPLES}")
    if topo:
        shape = tuple(int(x) for x in topo.group(2).split("x"))
        if len(shape) == 2 and facts.dims == 3:
            shape = shape + (1,)
        if len(shape) != facts.dims or min(shape) < 1:
            example = "4x4x4" if facts.dims == 3 else "16x16"
            raise UsageError(f"--target={spec}: a {facts.name} topology has {facts.dims} "
                             f"axes, e.g. {facts.topology_prefix}:{example}")
        chips = math.prod(shape)
    else:
        count = int(named.group(2))
        chips = count // facts.cores_per_chip
        if count % facts.cores_per_chip or chips < 1 or chips & (chips - 1):
            unit = "TensorCores (two per chip)" if facts.cores_per_chip == 2 else "chips"
            raise UsageError(f"--target={spec}: {facts.name} slices are named by {unit}"
                             f" in powers of two; for other shapes give the topology, e.g. "
                             f"{facts.topology_prefix}:{'4x4x12' if facts.dims == 3 else '8x16'}")
        shape = _shape_for(chips, facts.dims)
    topology = f"{facts.topology_prefix}:{'x'.join(str(s) for s in shape)}"
    return Target(spec, "tpu", chips * num_slices, num_slices, facts, topology, shape)


def _quiet_tpu_environment():
    """libtpu reads the Cloud TPU VM's metadata at load; off a TPU VM there is none to read."""
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    # Compile-only devices touch no hardware, so several planners may load libtpu at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_WORKER_ID", "0")


def devices(target: Target) -> list:
    """The target's devices: compile-only TPU devices from libtpu, or this host's CPU devices."""
    import jax
    if target.platform == "cpu":
        found = jax.devices("cpu")
        if len(found) != target.num_devices:
            raise UsageError(
                f"--target={target.spec}: this process has {len(found)} CPU device(s); set "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={target.num_devices} "
                "before jax is imported (lmjax-plan does this itself)")
        return found
    try:
        from jax.experimental import topologies
    except ImportError:  # pragma: no cover - jax always ships it
        raise UsageError("jax.experimental.topologies is missing; upgrade jax") from None
    _quiet_tpu_environment()
    shape = target.shape + (1,) * (3 - len(target.shape))
    host_bounds = tuple(min(2, s) for s in shape[:2]) + (1,)
    # Full cubes (v4/v5p) and 16-chip axes (v5e/v6e) close into a torus.
    full_axis = 4 if target.chip.dims == 3 else 16
    wrap = tuple(s >= full_axis and s % full_axis == 0 for s in shape)
    try:
        topology = topologies.get_topology_desc(
            topology_name=target.topology, platform="tpu",
            chip_config_name="megacore" if target.chip.cores_per_chip == 2 else "default",
            chips_per_host_bounds=host_bounds, num_slices=target.num_slices, wrap=wrap)
    except RuntimeError as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "not installed" in message:
            raise UsageError(f"--target={target.spec}: compiling for TPU needs libtpu; "
                             "pip install -e '.[plan]'") from None
        raise UsageError(f"--target={target.spec}: libtpu rejects topology "
                         f"{target.topology}: {message}") from None
    return list(topology.devices)
