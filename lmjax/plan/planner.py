"""One plan: the target's devices and facts, the compiled step, and its record."""
import os


def use_platform(target):
    """Before jax starts: compile-only TPU devices need only the CPU backend; cpu:N makes N."""
    os.environ["JAX_PLATFORMS"] = "cpu"
    if target.platform == "cpu":
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        flags.append(f"--xla_force_host_platform_device_count={target.num_devices}")
        os.environ["XLA_FLAGS"] = " ".join(flags)


def facts_for(target):
    """The chip's data-sheet facts, or this host measured for cpu:N."""
    from lmjax.plan import estimate
    if target.platform == "tpu":
        return estimate.tpu_facts(target.chip)
    return estimate.cpu_facts(target.num_devices)


def plan(cfg, target, overrides=None, facts=None, limit=None) -> dict:
    """Compiles cfg's train step for the target and returns the planner's record."""
    from lmjax.plan import aot, report, target as target_lib
    devices = target_lib.devices(target)
    facts = facts or facts_for(target)
    limit = aot.usable_memory(devices[0]) if limit is None else limit
    compiled = aot.compile_step(cfg, devices, limit)
    return report.record(cfg, target, facts, compiled, overrides)
