"""Metrics: JSONL + TensorBoard writers, FLOPs/MFU, the peak FLOP/s of a device, loss plots."""
import json
import os
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


def measure_matmul_flops(n: int = 1024, repeats: int = 8) -> float:
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


class MetricsWriter:
    """Appends one JSON object per line to WORKDIR/metrics.jsonl, mirrored to TensorBoard.

    Only the main process writes; the others get a writer that does nothing.
    """

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step: int):
        """On resume, drops lines past the restored step so the file reads as one clean run."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, self.path)

    def write(self, step: int, values: dict):
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)

    def close(self):
        if self._tb is not None:
            self._tb.close()


def _plain(value):
    value = np.asarray(value).item() if not isinstance(value, (str, int, float)) else value
    return value


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_losses(workdirs, output: str, labels=None):
    """Train and eval loss against step for one or more runs, one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, workdir in enumerate(workdirs):
        label = labels[i] if labels else os.path.basename(os.path.normpath(workdir))
        records = read_metrics(workdir)
        for key, style in (("train_loss", "-"), ("eval_loss", "o-")):
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                steps, losses = zip(*points)
                ax.plot(steps, losses, style, label=f"{label} {key.split('_')[0]}",
                        markersize=3, alpha=0.9)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output
