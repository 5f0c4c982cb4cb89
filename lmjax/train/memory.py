"""Per-device memory of a compiled train step, read from XLA's own analysis of the executable.

lmjax-train prints it for the step it runs and lmjax-plan for the step it compiles ahead of
time, so the two can be compared to the byte.
"""
from lmjax.parallel.shardings import bytes_per_device


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
