"""Per-device memory of a compiled train step, read from XLA's own analysis of the executable.

lmjax-train prints it for the step it runs and lmjax-plan for the step it compiles ahead of
time, so the two can be compared to the byte.
"""
import ctypes
import ctypes.util
import functools

from lmjax.parallel.shardings import bytes_per_device


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", None)
    except OSError:
        return None


def release_freed_host_memory() -> None:
    """Returns the host memory the process has freed to the OS.

    XLA's compiler allocates and frees a few hundred MiB per compile (about 300 MiB for the baby
    shakespeare_char step); glibc keeps those pages mapped, so each later compile, eval or save
    adds to the peak instead of reusing them. Called after each compile, it keeps the peak at the
    largest single compile's. Device memory is untouched.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def footprint(compiled, state, batch) -> dict:
    """Bytes per device: what the state and batch hold and what XLA adds while the step runs.

    `total` is live memory at the step's peak: arguments + temporaries + outputs that do not
    reuse a donated argument's buffer. Generated code is listed apart (on CPU it is host memory).
    """
    mem = compiled.memory_analysis()
    out = {"params": bytes_per_device(state.params),
           "optimizer": bytes_per_device(state.opt_state),
           "batch": bytes_per_device(batch)}
    if mem is None:  # a backend without memory analysis: the state and batch alone
        out.update(temporaries=0, outputs=0, code=0,
                   arguments=out["params"] + out["optimizer"] + out["batch"])
    else:
        out.update(arguments=int(mem.argument_size_in_bytes),
                   temporaries=int(mem.temp_size_in_bytes),
                   outputs=int(mem.output_size_in_bytes - mem.alias_size_in_bytes),
                   code=int(mem.generated_code_size_in_bytes))
    out["total"] = out["arguments"] + out["temporaries"] + out["outputs"]
    return out


def describe(fp: dict) -> str:
    """One line with exact byte counts, e.g. for the training log."""
    return (f"compiled memory per device: {fp['total']:,} bytes total = arguments "
            f"{fp['arguments']:,} (params {fp['params']:,}, optimizer {fp['optimizer']:,}, batch "
            f"{fp['batch']:,}) + temporaries {fp['temporaries']:,} + unaliased outputs "
            f"{fp['outputs']:,}")
