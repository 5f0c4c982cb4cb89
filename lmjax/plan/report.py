"""The planner's record of one compile, its printed table, and advice when it does not fit."""
import json
import math

from lmjax.parallel.mesh import BATCH_AXES
from lmjax.plan import estimate as estimate_lib

GiB = 2 ** 30


def record(cfg, target, facts, compiled, overrides=None) -> dict:
    """Everything the planner reports for one layout, JSON-ready (bytes per device, seconds)."""
    t = cfg.train
    tokens_per_device = t.batch_size * t.seq_len / target.num_devices
    rec = {"target": target.spec, "topology": target.topology or target.spec,
           "num_slices": target.num_slices, "devices": target.num_devices,
           "device": facts.name, "mesh": compiled.mesh, "memory": compiled.memory}
    rec.update(estimate_lib.fit(compiled, facts))
    est = estimate_lib.estimate(compiled, facts, tokens_per_device)
    rec.update(xla_flops=compiled.xla_flops, xla_bytes=compiled.xla_bytes,
               formula_flops=compiled.formula_flops, matmul_flops=compiled.matmul_flops,
               cost_model_raw=compiled.optimal_raw, **est,
               peak_flops=facts.peak_flops, bandwidth=facts.bandwidth,
               ici_bandwidth=facts.ici_bandwidth, facts_source=facts.source,
               compile_s=compiled.compile_s, oom=compiled.oom,
               overrides=dict(overrides or {}))
    rec["tokens_per_s_per_chip"] = rec.pop("tokens_per_s_per_device")
    if not rec["fits"]:
        rec["advice"] = advice(cfg, rec)
    return rec


def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def advice(cfg, rec) -> str:
    """What would make a layout fit: more chips for the state, or smaller temporaries."""
    mem, limit = rec["memory"], rec["limit_bytes"]
    state = mem["params"] + mem["optimizer"]
    mesh = rec["mesh"]
    sharded_over = mesh.get("fsdp", 1) * mesh.get("tensor", 1) * mesh.get("expert", 1)
    if state > limit * 0.9:
        # Parameters and moments divide over the fsdp x tensor axes; leave 10% for the step.
        chips = 2 ** math.ceil(math.log2(state * sharded_over / (limit * 0.9)))
        return (f"parameters and optimizer state alone take {_gib(state)} per device; shard them "
                f"over at least {chips} chips (mesh.fsdp) or use a larger slice")
    free = limit - mem["arguments"] - mem["outputs"]
    hints = []
    if free > 0 and mem["temporaries"] > 0:
        accum = cfg.optim.grad_accum_steps
        rows = cfg.train.batch_size // math.prod(mesh.get(a, 1) for a in BATCH_AXES)
        need = accum * 2 ** math.ceil(math.log2(max(1.0, mem["temporaries"] / free)))
        if need <= accum * rows and cfg.train.batch_size % need == 0 and need > accum:
            hints.append(f"--config.optim.grad_accum_steps={need}")
    if cfg.model.remat_policy != "full":
        hints.append("--config.model.remat_policy=full")
    hints.append("a larger slice, or --search for a layout that fits")
    return (f"temporaries take {_gib(mem['temporaries'])} per device with "
            f"{_gib(max(free, 0))} left after the state and batch; try " + ", ".join(hints))


def lines(rec, experiment: str) -> list[str]:
    mem = rec["memory"]
    refused = "  (at least: XLA refused the program)" if rec["oom"].startswith("RESOURCE") else ""
    mesh = " x ".join(f"{k}={v}" for k, v in rec["mesh"].items())
    out = [f"lmjax-plan: {experiment} on {rec['device']} {rec['topology']}"
           f"{' x %d slices' % rec['num_slices'] if rec['num_slices'] > 1 else ''}: "
           f"{rec['devices']} devices",
           f"mesh: {mesh}",
           "memory per device:",
           f"  parameters       {_gib(mem['params']):>12}",
           f"  optimizer state  {_gib(mem['optimizer']):>12}",
           f"  batch            {_gib(mem['batch']):>12}",
           f"  temporaries      {_gib(mem['temporaries']):>12}"
           f"{refused}",
           f"  other outputs    {_gib(mem['outputs']):>12}",
           f"  total            {_gib(mem['total']):>12}"]
    limit = (f"{_gib(rec['memory_bytes'])} per chip ({_gib(rec['limit_bytes'])} usable by XLA)"
             if rec["limit_bytes"] != rec["memory_bytes"] else _gib(rec["limit_bytes"]))
    if rec["fits"]:
        out.append(f"memory: {limit}; fits with {_gib(rec['headroom_bytes'])} to spare")
    else:
        out.append(f"memory: {limit}; does not fit by {_gib(-rec['headroom_bytes'])}")
        out.append(f"  to fit: {rec['advice']}")
    if rec["oom"]:
        out.append(f"no step-time estimate: {rec['oom']}")
    else:
        loops = (f" (XLA counts loop bodies once: x{rec['loop_scale']:.2f} FLOPs, "
                 f"x{rec['byte_scale']:.2f} bytes for every iteration)"
                 if rec["loop_scale"] > 1 or rec["byte_scale"] > 1 else "")
        ici = (f", ICI {rec['ici_s'] * 1e3:.4g} for {rec['collective_bytes'] / GiB:.2f} GiB of "
               "collectives" if rec["ici_bandwidth"] else "")
        model = ("cost model" if rec["cost_model_s"] else
                 "roofline; the TPU cost model gave no estimate" if rec["cost_model_raw"] < 0
                 else "roofline")
        out += [f"FLOPs per step per device: {rec['flops']:.4g} (matmuls "
                f"{rec['matmul_flops']:.4g}), 6N+12LdT {rec['formula_flops']:.4g}{loops}",
                f"HBM bytes per step per device: {rec['bytes_accessed']:.4g}",
                f"step time: {rec['step_s'] * 1e3:.4g} ms ({model}); roofline "
                f"{rec['roofline_s'] * 1e3:.4g} ms = max(compute {rec['compute_s'] * 1e3:.4g}, "
                f"memory {rec['memory_s'] * 1e3:.4g}{ici})",
                f"tokens/s per chip: {rec['tokens_per_s_per_chip']:,.0f}; MFU "
                f"{100 * rec['mfu']:.1f}% of {rec['peak_flops'] / 1e12:.4g} TFLOP/s",
                f"chip facts: {rec['facts_source']}"]
    out.append(f"compiled in {rec['compile_s']:.1f} s")
    return out


def json_line(rec) -> str:
    return json.dumps(rec, sort_keys=True)
