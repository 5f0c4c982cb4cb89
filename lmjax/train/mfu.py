"""MFU: the peak FLOP/s a run's model FLOPs are measured against, per device kind."""
import time

import jax
import jax.numpy as jnp
import numpy as np

# Dense bf16 peak FLOP/s per chip, from the vendors' data sheets.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA A100": 312e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA B200": 2250e12,
}


def measure_matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """Measured f32 matmul FLOP/s of this device: the honest ceiling on a CPU."""
    x = jnp.ones((n, n), jnp.float32)
    dot = jax.jit(lambda a: a @ a)
    dot(x).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dot(x).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / float(np.median(times))


def peak_flops_per_device(configured: float) -> tuple[float, str]:
    """(FLOP/s, where the number came from), so every MFU says what it is relative to."""
    if configured > 0:
        return configured, "metrics.peak_flops_per_device"
    kind = jax.devices()[0].device_kind
    for name, flops in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
        if kind.startswith(name):
            return flops, f"data sheet for {kind}"
    return measure_matmul_flops(), f"measured f32 matmul on {kind}"
