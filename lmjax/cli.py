"""Command-line glue: argument parsing and error handling that follow the house rule.

Bad input ends in one line `error: ...` on stderr and exit code 2, never a traceback.
"""
import argparse
import os
import sys

from lmjax import io
from lmjax.errors import NonFiniteError, RunFailure, UsageError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a missing or malformed flag is one line naming the flag, not a usage dump."""

    def error(self, message):
        print(f"error: {self.prog}: {message}; see {self.prog} --help", file=sys.stderr)
        sys.exit(2)


def fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def run_command(fn):
    """Runs a command's body: user errors become one line and exit 2, preemption its own code."""
    from lmjax.train.preemption import Preempted
    try:
        return fn()
    except UsageError as e:
        fail(str(e))
    except Preempted as e:
        say_once(str(e))
        sys.exit(e.exit_code)
    except RunFailure as e:
        # A failed save or a barrier timeout: each process says what it saw (the one that
        # timed out may not be process 0), and the exit code tells the scheduler what to do.
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except NonFiniteError as e:
        # A NaN/Inf stop is the run's outcome, not a crash: one line, exit code 1.
        say_once(f"error: {e}")
        sys.exit(1)


def say_once(message: str):
    """Prints on process 0 only, so a multi-process run reports once."""
    import jax
    if jax.process_index() == 0:
        print(message, file=sys.stderr, flush=True)


def check_output_file(path: str, flag: str):
    """UsageError unless `path` can be written as a file (its folders are made on writing)."""
    if "://" in path:
        return
    if os.path.isdir(path):
        raise UsageError(f"{flag}={path}: is a directory; give a file path such as "
                         f"{os.path.join(path, 'plot.png')}")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise UsageError(f"{flag}={path}: cannot be written ({parent} is not a writable "
                         "directory); pick another path")


def check_workdir(workdir: str):
    """UsageError unless `workdir` is (or can become) a writable directory."""
    if io.is_remote(workdir):
        return  # object stores (gs://) have no directories to check; orbax reports access errors
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UsageError(f"--workdir={workdir}: exists and is not a directory")
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".lmjax-write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"--workdir={workdir}: cannot write there ({e.strerror or e}); pick a "
                         "directory you can write to") from None
