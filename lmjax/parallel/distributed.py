"""Joining a multi-process run: jax.distributed.initialize from flags, environment or the cluster.

Where the settings come from, first match wins:
  1. flags   --coordinator_address=HOST:PORT --num_processes=N --process_id=I
  2. env     LMJAX_COORDINATOR, LMJAX_NUM_PROCESSES, LMJAX_PROCESS_ID
  3. a SLURM job with more than one task, or a Cloud TPU VM (jax detects both)
  4. otherwise one process: nothing to initialise.
The start-up timeout is --distributed_timeout_s or LMJAX_DISTRIBUTED_TIMEOUT_S (default 300 s).

JAX ends the process with a fatal error when the coordinator cannot be reached in time, so
before handing over, a non-coordinator process waits for the coordinator's port itself and
raises a one-line UsageError if nobody listens there within the timeout.
"""
import argparse
import dataclasses
import os
import socket
import sys
import time

from lmjax.errors import UsageError

ENV = {"coordinator_address": "LMJAX_COORDINATOR", "num_processes": "LMJAX_NUM_PROCESSES",
       "process_id": "LMJAX_PROCESS_ID", "timeout_s": "LMJAX_DISTRIBUTED_TIMEOUT_S"}
DEFAULT_TIMEOUT_S = 300


@dataclasses.dataclass
class Settings:
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    timeout_s: int = DEFAULT_TIMEOUT_S


def add_flags(parser: argparse.ArgumentParser):
    group = parser.add_argument_group(
        "multi-process", "one process per host; unset on a single host. Each flag falls back "
        "to its LMJAX_* environment variable; SLURM jobs and Cloud TPU VMs are detected.")
    group.add_argument("--coordinator_address", default=None,
                       help=f"HOST:PORT of process 0 (env {ENV['coordinator_address']})")
    group.add_argument("--num_processes", default=None,
                       help=f"processes in the run (env {ENV['num_processes']})")
    group.add_argument("--process_id", default=None,
                       help=f"this process's index, 0..N-1 (env {ENV['process_id']})")
    group.add_argument("--distributed_timeout_s", default=None,
                       help=f"seconds to wait for all processes at start-up (env "
                            f"{ENV['timeout_s']}, default {DEFAULT_TIMEOUT_S})")


def _int(value, name: str, minimum: int):
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum:
        raise UsageError(f"{name}={value!r}: expected an integer >= {minimum}")
    return number


def settings_from(args=None, environ=None) -> Settings:
    environ = os.environ if environ is None else environ

    def pick(field, flag):
        value = getattr(args, flag, None) if args is not None else None
        if value is not None:
            return value, f"--{flag}"
        return environ.get(ENV[field]), ENV[field]

    address, _ = pick("coordinator_address", "coordinator_address")
    count, count_name = pick("num_processes", "num_processes")
    index, index_name = pick("process_id", "process_id")
    timeout, timeout_name = pick("timeout_s", "distributed_timeout_s")
    s = Settings(coordinator_address=address or None)
    if count is not None:
        s.num_processes = _int(count, count_name, 1)
    if index is not None:
        s.process_id = _int(index, index_name, 0)
    if timeout is not None:
        s.timeout_s = _int(timeout, timeout_name, 1)
    given = [v is not None for v in (s.coordinator_address, s.num_processes, s.process_id)]
    if s.num_processes not in (None, 1) and not all(given):
        raise UsageError("--coordinator_address, --num_processes and --process_id go together "
                         f"(or {', '.join(list(ENV.values())[:3])}); set all three")
    if s.num_processes is not None and s.process_id is not None \
            and s.process_id >= s.num_processes:
        raise UsageError(f"--process_id={s.process_id}: must be below "
                         f"--num_processes={s.num_processes}")
    if s.coordinator_address is not None and ":" not in s.coordinator_address:
        raise UsageError(f"--coordinator_address={s.coordinator_address!r}: expected HOST:PORT")
    return s


def _detected_cluster() -> str | None:
    """'SLURM' or 'Cloud TPU' when jax can find the processes itself, else None."""
    environ = os.environ
    if "SLURM_JOB_ID" in environ and int(environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return "SLURM"
    try:
        from jax._src.clusters import cloud_tpu_cluster
        for env in (cloud_tpu_cluster.GkeTpuCluster, cloud_tpu_cluster.GceTpuCluster):
            if env.is_env_present():
                return "Cloud TPU"
    except Exception:  # the detection is best effort; flags always work
        return None
    return None


def wait_for_port(address: str, timeout_s: float):
    """Returns once HOST:PORT accepts a connection; UsageError after timeout_s."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, timeout_s)):
                return
        except OSError as e:
            last_error = e
            time.sleep(0.2)
    raise UsageError(f"--coordinator_address={address}: nobody listened there within "
                     f"{timeout_s:g} s ({last_error}); start process 0 first, check the host and "
                     "port are reachable from this host, or raise --distributed_timeout_s")


def initialize(settings: Settings) -> bool:
    """Joins the multi-process run the settings describe; False when there is only one process."""
    s = settings
    cluster = None
    if s.num_processes is None:
        cluster = _detected_cluster()
        if cluster is None:
            return False
    elif s.num_processes == 1:
        return False
    if cluster is None and s.process_id != 0:
        wait_for_port(s.coordinator_address, s.timeout_s)
    import jax
    # Cross-process collectives on CPU need an implementation; TPUs and GPUs bring their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    who = (f"process {s.process_id} of {s.num_processes}" if cluster is None
           else f"a {cluster} job")
    print(f"joining {who} via {s.coordinator_address or 'the cluster coordinator'}; waiting up to "
          f"{s.timeout_s} s for every process (a DEADLINE_EXCEEDED abort means one never came: "
          "check every process got the same --coordinator_address and --num_processes)",
          file=sys.stderr, flush=True)
    try:
        jax.distributed.initialize(coordinator_address=s.coordinator_address,
                                   num_processes=s.num_processes, process_id=s.process_id,
                                   initialization_timeout=s.timeout_s)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"could not join {who} via {s.coordinator_address}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return True
