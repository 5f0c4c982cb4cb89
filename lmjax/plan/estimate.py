"""From one compile's numbers to a step time, tokens/s and MFU, and the chip they are for.

Step time is the TPU cost model's `optimal_seconds` where the backend gives one, otherwise a
roofline: the largest of FLOPs / peak, HBM bytes / bandwidth and collective bytes / the
incoming half of the chip's ICI bandwidth, per device (perfect overlap: a lower bound).

XLA's cost analysis counts a while loop's body once (a `scan` over layers or microbatches).
The planner counts the same step again with every iteration: matmul FLOPs from the step's
jaxpr (flops.py), HBM and collective bytes from the optimized HLO (hlo.py), each both ways.
XLA's FLOPs and bytes are scaled by those ratios (loop bodies in full / once), and the cost
model's seconds by the roofline's ratio, so XLA's accounting of what it fused stays the base.
"""
import dataclasses
import os

from lmjax.plan.chips import Chip


@dataclasses.dataclass(frozen=True)
class Facts:
    """Per-device capacity and speeds the estimate uses, and where they came from."""

    name: str
    memory_bytes: int
    peak_flops: float
    bandwidth: float
    source: str
    ici_bandwidth: float = 0.0  # 0: communication is left out of the roofline


def tpu_facts(chip: Chip) -> Facts:
    return Facts(chip.name, chip.hbm_bytes, chip.peak_flops, chip.hbm_bandwidth, chip.source,
                 chip.ici_bandwidth)


def _measure_bandwidth(n_bytes: int = 2 ** 28, repeats: int = 5) -> float:
    """Bytes/s of a streaming read + write on this host (x + 1 over a 256 MiB array)."""
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np
    device = jax.devices("cpu")[0]
    x = jax.device_put(jnp.zeros(n_bytes // 4, jnp.float32), device)
    add = jax.jit(lambda a: a + 1.0)
    add(x).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        add(x).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n_bytes / float(np.median(times))


def cpu_facts(num_devices: int) -> Facts:
    """This host measured: matmul peak and memory bandwidth, shared by its N fake devices."""
    from lmjax.train.mfu import measure_matmul_flops
    peak, bandwidth = measure_matmul_flops(), _measure_bandwidth()
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return Facts(f"CPU ({os.cpu_count()} cores)", ram // num_devices, peak / num_devices,
                 bandwidth / num_devices,
                 f"measured here: {peak / 1e9:.1f} GFLOP/s f32 matmul, {bandwidth / 1e9:.1f} GB/s "
                 f"streaming, {ram / 2 ** 30:.0f} GiB RAM, shared by {num_devices} device(s)")


def _ratio(full: float, once: float) -> float:
    return full / once if once > 0 and full > once else 1.0


def estimate(compiled, facts: Facts, tokens_per_device: float) -> dict:
    """Step time, throughput and MFU of a `Compiled` on devices with `facts`."""
    c = compiled
    loop_scale = _ratio(c.matmul_flops, c.matmul_flops_once)
    byte_scale = _ratio(c.hbm_bytes, c.hbm_bytes_once)
    flops, bytes_ = c.xla_flops * loop_scale, c.xla_bytes * byte_scale
    compute_s, memory_s = flops / facts.peak_flops, bytes_ / facts.bandwidth
    # A collective's bytes arrive over the incoming half of the chip's bidirectional links.
    link = facts.ici_bandwidth / 2
    ici_s = c.collective_bytes / link if link else 0.0
    roofline_s = max(compute_s, memory_s, ici_s)
    once_s = max(c.xla_flops / facts.peak_flops, c.xla_bytes / facts.bandwidth,
                 c.collective_bytes_once / link if link else 0.0)
    cost_model_s = c.optimal_seconds * (roofline_s / once_s if once_s > 0 else 1.0)
    step_s = cost_model_s or roofline_s
    out = {"loop_scale": loop_scale, "byte_scale": byte_scale, "flops": flops,
           "bytes_accessed": bytes_, "collective_bytes": c.collective_bytes,
           "compute_s": compute_s, "memory_s": memory_s, "ici_s": ici_s,
           "roofline_s": roofline_s, "cost_model_s": cost_model_s, "step_s": step_s,
           "step_source": "cost model" if cost_model_s else "roofline",
           "tokens_per_s_per_device": 0.0, "mfu": 0.0}
    if step_s > 0:
        out["tokens_per_s_per_device"] = tokens_per_device / step_s
        out["mfu"] = c.formula_flops / (step_s * facts.peak_flops)
    return out


def fit(compiled, facts: Facts) -> dict:
    """Headroom against the device's memory: XLA's usable limit where known, else the data sheet."""
    limit = compiled.hbm_limit or facts.memory_bytes
    total = compiled.memory["total"]
    return {"memory_bytes": facts.memory_bytes, "limit_bytes": limit,
            "headroom_bytes": limit - total, "fits": not compiled.oom and total <= limit}
