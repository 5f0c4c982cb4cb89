"""Metrics: JSONL + TensorBoard writers, MFU and the peak FLOP/s it is measured against."""
import json
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


def is_remote(path: str) -> bool:
    return "://" in str(path)


class MetricsWriter:
    """One JSON object per line in WORKDIR/metrics.jsonl, mirrored to TensorBoard.

    Only the main process writes; the others get a writer that does nothing. Local files are
    appended to; object stores (gs://) cannot append, so there the file is rewritten whole.
    """

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
        from etils import epath
        self.enabled = enabled
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self._remote = is_remote(workdir)
        self._lines = None
        self._tb = None
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))

    def _read_lines(self) -> list[str]:
        if not self.path.exists():
            return []
        return [line + "\n" for line in self.path.read_text().splitlines() if line.strip()]

    def _rewrite(self, lines: list[str]):
        tmp = self.path.parent / (self.path.name + ".tmp")
        tmp.write_text("".join(lines))
        tmp.replace(self.path)

    def truncate_after(self, step: int):
        """On resume, drops lines past the restored step so the file reads as one clean run."""
        if not self.enabled:
            return
        kept = []
        for line in self._read_lines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):
                pass  # a line half-written when the process died
        self._rewrite(kept)
        self._lines = kept if self._remote else None

    def write(self, step: int, values: dict):
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in values.items()}}
        line = json.dumps(record) + "\n"
        if self._remote:
            self._lines = self._read_lines() if self._lines is None else self._lines
            self._lines.append(line)
            self._rewrite(self._lines)
        else:
            with open(self.path, "a") as f:
                f.write(line)
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
