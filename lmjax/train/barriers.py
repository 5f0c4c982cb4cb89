"""Bounded multi-process waits: every barrier lmjax or orbax enters gives up after
train.barrier_timeout_s with one line naming the step and the processes that never arrived.

Orbax by default syncs processes with a device collective, which has no timeout; `configure`
switches it to the distributed client's barrier (which has one) and sets that timeout and the
async-save commit timeout from the same field. lmjax's own sync points use `barrier`.
Collectives inside the compiled step cannot time out; the hang watchdog covers those.
"""
import re

import jax

from lmjax.errors import RunFailure
from lmjax.train.watchdog import HANG_EXIT_CODE

DEFAULT_TIMEOUT_S = 600


class BarrierTimeout(RunFailure):
    """A wait for every process ran out of time; re-running the job resumes from a checkpoint."""

    exit_code = HANG_EXIT_CODE


_settings = {"timeout_s": DEFAULT_TIMEOUT_S}


def configure(timeout_s: int):
    """Bounds orbax's barriers (and lmjax's) by `timeout_s`; call before any manager is made."""
    _settings["timeout_s"] = int(timeout_s)
    from absl import flags
    import orbax.checkpoint as ocp
    flag = flags.FLAGS["experimental_orbax_use_distributed_barrier"]
    flag.value, flag.present = True, 1  # read without absl parsing the command line
    # orbax reads this module constant for every synchronous barrier; no other setting reaches it.
    setattr(ocp.multihost, "_DEFAULT_BARRIER_TIMEOUT", int(timeout_s))


def timeout_s() -> int:
    return _settings["timeout_s"]


def missing_processes(message: str) -> list[int]:
    """Process ids the coordination service names as not having reached a barrier."""
    tail = message.split("timed out task names", 1)[-1] if "timed out task names" in message \
        else message
    return sorted({int(n) for n in re.findall(r"task[:/](\d+)", tail)})


def explain(error: Exception, what: str, step: int | None = None) -> BarrierTimeout | None:
    """A BarrierTimeout for a barrier deadline error; None for anything else."""
    text = str(error)
    if not any(key in text for key in ("DEADLINE_EXCEEDED", "Barrier timed out",
                                       "timed out", "Timeout")):
        return None
    missing = [p for p in missing_processes(text) if p != jax.process_index()]
    who = (f"process(es) {', '.join(map(str, missing))} never arrived" if missing
           else "another process never arrived")
    at = f" at step {step}" if step is not None else ""
    return BarrierTimeout(f"{what}{at}: {who} within train.barrier_timeout_s={timeout_s()} s "
                          f"(this is process {jax.process_index()} of {jax.process_count()}); "
                          "check that process's log, then run the same command again to "
                          "resume from the last checkpoint")


def barrier(name: str, what: str, step: int | None = None, watchdog=None):
    """Waits until every process reaches `name`, at most barrier_timeout_s."""
    if jax.process_count() == 1:
        return
    if watchdog is not None:
        watchdog.sync_point(name)
    import orbax.checkpoint as ocp
    sync = ocp.multihost.get_barrier_sync_fn()
    try:
        sync(key=name, timeout_ms=timeout_s() * 1000)
    except Exception as e:  # the client raises XlaRuntimeError; its text says what timed out
        explained = explain(e, what, step)
        if explained is None:
            raise
        raise explained from None


def exchange(key: str, value: str, what: str, step: int | None = None, decode=str) -> list:
    """Every process's `value` under `key`, in process order; bounded like `barrier`."""
    import orbax.checkpoint as ocp
    client = ocp.multihost.get_jax_distributed_client()
    me = jax.process_index()
    client.key_value_set(f"{key}/{me}", value, allow_overwrite=True)
    values = []
    for process in range(jax.process_count()):
        try:
            values.append(decode(client.blocking_key_value_get(f"{key}/{process}",
                                                               timeout_s() * 1000)))
        except Exception as e:  # the client raises XlaRuntimeError on its deadline
            if explain(e, what, step) is None:
                raise
            raise BarrierTimeout(
                f"{what}: process {process} never arrived within train.barrier_timeout_s="
                f"{timeout_s()} s (this is process {me} of {jax.process_count()}); check that "
                "process's log, then run the same command again to resume from the last "
                "checkpoint") from None
    return values
