"""The loop's checkpoint saves, and what a failed one does.

A save can fail in its blocking part or, later, in orbax's background commit (a full disk, a lost
permission, a bucket error). Either way orbax never deletes older steps before the new one has
committed, so the previous checkpoints stay as they were; the half-written step directory is
removed here to give its space back. Then, per train.on_save_error:
  stop      the run ends with one line: the step, the path, the space the save needed and what
            was free (exit code 1); running the same command again resumes from the last
            checkpoint
  continue  a warning, and training goes on; the next save interval tries again
"""
import contextlib
import errno
import logging
import os
import re
import shutil

import jax

from lmjax.errors import RunFailure
from lmjax.train import barriers, checkpoint


class SaveFailed(RunFailure):
    """A checkpoint could not be written; the message is one line and names the step."""

    exit_code = 1


class _OrbaxTracebacks(logging.Filter):
    """Drops orbax's error records (tracebacks of a failed background save, repeated by each of
    its threads): the failure reaches the loop as an exception and is reported there once."""

    def filter(self, record):
        return not (record.levelno >= logging.ERROR and "orbax" in record.pathname)


def quiet_orbax_errors():
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _OrbaxTracebacks) for f in logger.filters):
        logger.addFilter(_OrbaxTracebacks())


def state_bytes(state) -> int:
    """Bytes of every array in the train state, over all devices: what a save writes at most."""
    return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(state)
               if hasattr(x, "dtype"))


def _free_bytes(path: str):
    if "://" in path:
        return None
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path or ".").free
    except OSError:
        return None


def _mib(n) -> str:
    return f"{n / 2**20:.1f} MiB"


def describe_error(error: BaseException) -> str:
    """The cause in a few words: the OS error where one is known (tensorstore buries it at the
    end of a long message), else the message's first line."""
    text = str(error).strip()
    code = getattr(error, "errno", None)
    match = re.search(r"os_error_code='?(\d+)", text)
    if code is None and match:
        code = int(match.group(1))
    if code:
        return f"{os.strerror(code)} [{errno.errorcode.get(code, code)}]"
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"[:300]


class Saves:
    def __init__(self, manager, train_cfg, warn=print, watchdog=None, phase=None):
        self.manager, self.policy = manager, train_cfg.on_save_error
        # Time spent here is the blocking part of checkpointing (goodput, watchdog).
        self.phase = phase or (lambda name: contextlib.nullcontext())
        self.every = train_cfg.checkpoint_every
        self.warn, self.watchdog = warn, watchdog
        self.pending = None  # (step, bytes) of a save whose background commit may still fail
        self.failures = []
        quiet_orbax_errors()

    def save(self, step: int, state, data_state: dict, config: dict, tokens_seen: int):
        self.wait()  # a failure of the previous save is reported against its own step
        if self.watchdog is not None:
            self.watchdog.sync_point(f"checkpoint save of step {step}")
        with self.phase("checkpoint"):
            try:
                checkpoint.save(self.manager, step, state, data_state, config, tokens_seen)
            except (checkpoint.NonFiniteCheckpointError, barriers.BarrierTimeout):
                raise
            except Exception as e:  # orbax and tensorstore raise many types for a failed write
                self._failed(step, state_bytes(state), e)
                return
        self.pending = (step, state_bytes(state))

    def poll(self):
        """Reports a background failure as soon as the commit has ended; cheap otherwise."""
        if self.pending is not None and not self.manager.is_saving_in_progress():
            self.wait()

    def wait(self):
        if self.pending is None:
            return
        step, nbytes = self.pending
        self.pending = None
        with self.phase("checkpoint"):
            try:
                self.manager.wait_until_finished()
            except Exception as e:
                self._failed(step, nbytes, e)

    def _failed(self, step: int, nbytes: int, error: Exception):
        explained = barriers.explain(error, f"checkpoint save of step {step}", step)
        if explained is not None and "RESOURCE_EXHAUSTED" not in str(error):
            raise explained from None
        where = os.path.join(str(self.manager.directory), str(step))
        self._remove_partial(step)
        self.manager.reload()
        kept = [s for s in self.manager.all_steps() if s != step]
        free = _free_bytes(str(self.manager.directory))
        space = f"it needed up to {_mib(nbytes)} (the uncompressed state)" + (
            f" and {_mib(free)} are free there" if free is not None else "")
        previous = (f"the previous checkpoint (step {max(kept)}) is intact" if kept
                    else "no earlier checkpoint exists")
        message = f"checkpoint save of step {step} to {where} failed: {describe_error(error)}; " \
                  f"{space}; {previous}"
        self.failures.append(step)
        if self.policy == "continue":
            self.warn(f"warning: {message}; training continues and saves again in "
                      f"{self.every} steps (train.on_save_error=continue)")
            return
        raise SaveFailed(f"{message}. Free space (or fix access), then run the same command "
                         "to resume from it; train.on_save_error=continue keeps training "
                         "instead")

    def _remove_partial(self, step: int):
        """The failed step's temporary directory holds nothing readable, only used space."""
        if jax.process_index() != 0 or "://" in str(self.manager.directory):
            return
        root = str(self.manager.directory)
        for name in os.listdir(root) if os.path.isdir(root) else ():
            if name.startswith(f"{step}.orbax-checkpoint-tmp"):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
