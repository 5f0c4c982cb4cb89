"""Ahead-of-time compile of the train step lmjax-train runs, for a target's devices.

The step comes from `lmjax.train.step.build`, the builder the training loop uses, and is
lowered with abstract state and batch (ShapeDtypeStructs carrying their shardings): nothing is
allocated, and the devices may be compile-only TPU devices of a slice that is not present.
"""
import dataclasses
import re
import time

from lmjax.model import flops_per_token
from lmjax.parallel import mesh as mesh_lib
from lmjax.plan import flops as flops_lib, hlo
from lmjax.parallel.shardings import bytes_per_device
from lmjax.train import memory, state as state_lib, step as step_lib

# XLA:TPU refuses a program whose buffers cannot fit, before it finishes compiling; its message
# carries what was needed and what the chip has, e.g. "... HLO temporaries (36.93G) exceeds
# available HBM (15.75G)".
_OOM = re.compile(r"(?P<what>[\w ]+?) \((?P<need>[\d.]+)([KMGT])\) exceeds available HBM "
                  r"\((?P<have>[\d.]+)([KMGT])\)")
_UNITS = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


@dataclasses.dataclass
class Compiled:
    """What one compile reports; `memory` is per device, FLOPs and bytes per device per step."""

    mesh: dict
    memory: dict
    compile_s: float
    oom: str = ""  # XLA's refusal, when the program cannot fit at all
    hbm_limit: int = 0  # the compiler's usable HBM, where its refusal names it
    xla_flops: float = 0.0
    xla_bytes: float = 0.0
    optimal_seconds: float = 0.0  # the TPU cost model's estimate; 0 where it gives none
    optimal_raw: float = 0.0  # what the cost model answered (negative: no estimate)
    formula_flops: float = 0.0  # 6N + 12LdT per token, times this device's tokens
    # Loop bodies counted in full against once, as XLA's analysis counts them (flops.py, hlo.py):
    matmul_flops: float = 0.0
    matmul_flops_once: float = 0.0
    hbm_bytes: float = 0.0
    hbm_bytes_once: float = 0.0
    collective_bytes: float = 0.0
    collective_bytes_once: float = 0.0


def _oom(message: str):
    """(bytes XLA needed, bytes it had) from an out-of-memory refusal, or None."""
    found = _OOM.search(message)
    if not found:
        return None
    groups = found.groups()
    return (int(float(found["need"]) * _UNITS[groups[2]]),
            int(float(found["have"]) * _UNITS[groups[4]]))


def _uncompiled(state, batch, temporaries=0) -> dict:
    """The footprint from shapes alone, for a program that was not (or could not be) compiled."""
    fp = {"params": bytes_per_device(state.params),
          "optimizer": bytes_per_device(state.opt_state), "batch": bytes_per_device(batch)}
    fp.update(arguments=bytes_per_device(state) + fp["batch"], temporaries=temporaries,
              outputs=0, code=0)
    fp["total"] = fp["arguments"] + temporaries
    return fp


def compile_step(cfg, devices, limit: int = 0) -> Compiled:
    """Builds, lowers and compiles the real train step of a validated `cfg` over `devices`.

    With `limit` (bytes per device), a step whose state and batch alone exceed it is not
    compiled: no compile could make it fit.
    """
    import jax
    mesh = mesh_lib.make_mesh(cfg, devices)
    step = step_lib.build(cfg, mesh)
    state, batch = step.abstract_state(), step.abstract_batch()
    t = cfg.train
    formula = flops_per_token(cfg.model, t.seq_len,
                              state_lib.matmul_params(state.params, cfg.model))
    formula *= t.batch_size * t.seq_len / len(devices)
    start = time.perf_counter()
    if limit:
        fp = _uncompiled(state, batch)
        if fp["total"] > limit:
            return Compiled(dict(mesh.shape), fp, 0.0, hbm_limit=limit, formula_flops=formula,
                            oom="not compiled: the state and batch alone exceed the memory")
    with step.context():
        traced = step.train_step.trace(state, batch)
        lowered = traced.lower()
        try:
            compiled = lowered.compile()
        except jax.errors.JaxRuntimeError as e:
            found = _oom(str(e))
            if found is None:
                raise
            need, have = found
            fp = _uncompiled(state, batch)
            # XLA's figure covers what it names (temporaries, or all buffers): at least `need`.
            fp = _uncompiled(state, batch, need if "temporar" in str(e)
                             else max(need - fp["arguments"], 0))
            return Compiled(dict(mesh.shape), fp, time.perf_counter() - start,
                            oom=str(e).splitlines()[0], hbm_limit=have, formula_flops=formula)
    compile_s = time.perf_counter() - start
    traffic = hlo.traffic(compiled.as_text())
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, (list, tuple)):  # older jax: one dict per program
        cost = cost[0] if cost else {}
    optimal = float(cost.get("optimal_seconds", 0.0) or 0.0)
    return Compiled(dict(mesh.shape), memory.footprint(compiled, state, batch), compile_s,
                    xla_flops=float(cost.get("flops", 0.0)),
                    xla_bytes=float(cost.get("bytes accessed", 0.0)),
                    # The cost model answers negative for programs it cannot model.
                    optimal_seconds=optimal if optimal > 0 else 0.0, optimal_raw=optimal,
                    formula_flops=formula, hbm_limit=limit,
                    matmul_flops=flops_lib.matmul_flops(traced.jaxpr) / len(devices),
                    matmul_flops_once=flops_lib.matmul_flops(traced.jaxpr, once=True)
                    / len(devices),
                    hbm_bytes=traffic.hbm, hbm_bytes_once=traffic.hbm_once,
                    collective_bytes=traffic.collective,
                    collective_bytes_once=traffic.collective_once)


def usable_memory(device) -> int:
    """The compiler's own per-device memory limit, or 0 where the backend states none.

    XLA:TPU names its limit when it refuses a program that cannot fit, so a 128 GiB program
    (larger than any chip's HBM; compiling it allocates nothing) reads the limit in a second.
    """
    import jax
    import jax.numpy as jnp
    from jax.sharding import SingleDeviceSharding
    if device.platform != "tpu":
        return 0
    huge = jax.ShapeDtypeStruct((2 ** 35,), jnp.float32, sharding=SingleDeviceSharding(device))
    try:
        jax.jit(lambda a: a * 2).lower(huge).compile()
    except jax.errors.JaxRuntimeError as e:
        found = _oom(str(e))
        return found[1] if found else 0
    return 0
