"""Shared pieces of the benchmarks: build a config's jitted train step and time it."""
import resource
import time

import jax
import numpy as np

from lmjax import config as config_lib, validation
from lmjax.model import flops_per_token
from lmjax.parallel import mesh as mesh_lib
from lmjax.parallel import shardings as sharding
from lmjax.train import host_memory, state as state_lib, step as step_lib


def load(spec: str, overrides: dict | None = None):
    cfg = config_lib.load_config(spec)
    config_lib.apply_overrides(cfg, overrides or {})
    validation.validate(cfg, jax.device_count())
    return cfg


def build_step(cfg):
    """(compiled step, state, batch maker, flops/token, compile seconds) for a config."""
    host_memory.configure_host_allocator(cfg.train.host_allocator)  # as lmjax.train.loop.run
    built = step_lib.build(cfg, mesh_lib.make_mesh(cfg))
    state = built.init_state()
    rng = np.random.default_rng(0)
    t = cfg.train

    def batch():
        ids = rng.integers(0, cfg.model.vocab_size, (t.batch_size, t.seq_len + 1), np.int32)
        return sharding.global_batch({"inputs": ids[:, :-1], "targets": ids[:, 1:]},
                                     built.batch_sharding)

    with built.context():
        start = time.perf_counter()
        compiled = built.train_step.lower(state, batch()).compile()
        compile_s = time.perf_counter() - start
    flops = flops_per_token(cfg.model, cfg.train.seq_len,
                            state_lib.matmul_params(state.params, cfg.model))
    return compiled, state, batch, flops, compile_s


def time_steps(compiled, state, batch, steps: int, warmup: int = 2):
    """Median wall time of a step (blocking on each), after warm-up steps."""
    times = []
    for i in range(warmup + steps):
        b = batch()
        start = time.perf_counter()
        state, metrics = compiled(state, b)
        jax.block_until_ready(metrics)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times)), state


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
