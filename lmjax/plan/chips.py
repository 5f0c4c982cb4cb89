"""Per-chip facts the planner measures against: HBM, dense bf16 peak, HBM and ICI bandwidth.

One table, one row per TPU generation, each number from the generation's Cloud TPU system
architecture page (the `source` of its row). The v4 page states no per-chip ICI bandwidth, so
v4 estimates leave communication out (0). Google writes HBM sizes as "GB"; the stacks are
binary sizes (16 GiB on v5e), and the compiler's own limit is a little lower still (it reserves
some HBM for the runtime): where XLA reports that limit in an out-of-memory error, the planner
uses XLA's number, and this table is the fallback.
"""
import dataclasses

GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    hbm_bytes: int
    peak_flops: float  # dense bf16 FLOP/s per chip
    hbm_bandwidth: float  # bytes/s per chip
    ici_bandwidth: float  # bytes/s per chip, bidirectional over all its links; 0 = not stated
    source: str
    # How libtpu names the generation in a topology ("v5e:16x16"), and whether a chip is two
    # TensorCores that jax drives as one device (megacore) with a 3D torus of chips.
    topology_prefix: str
    dims: int
    cores_per_chip: int


CHIPS = {
    "v4": Chip("TPU v4", 32 * GiB, 275e12, 1200e9, 0.0,
               "cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16, 32 GiB HBM2, 1200 GB/s",
               "v4", 3, 2),
    "v5e": Chip("TPU v5e", 16 * GiB, 197e12, 819e9, 400e9,
                "cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16, 16 GB HBM2, 819 GB/s, "
                "ICI 400 GB/s",
                "v5e", 2, 1),
    "v5p": Chip("TPU v5p", 95 * GiB, 459e12, 2765e9, 1200e9,
                "cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16, 95 GB HBM2e, 2765 GB/s, "
                "ICI 1200 GB/s",
                "v5p", 3, 2),
    "v6e": Chip("TPU v6e", 32 * GiB, 918e12, 1640e9, 800e9,
                "cloud.google.com/tpu/docs/v6e: 918 TFLOP/s bf16, 32 GB HBM, 1640 GB/s, "
                "ICI 800 GB/s",
                "v6e", 2, 1),
}
# Names Cloud TPU accelerator types also use for a generation.
ALIASES = {"v5litepod": "v5e", "v6litepod": "v6e", "v5": "v5p"}


def chip(generation: str) -> Chip | None:
    return CHIPS.get(ALIASES.get(generation, generation))
