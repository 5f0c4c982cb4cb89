"""One training run per workdir: WORKDIR/lmjax.lock names the run that holds it.

Local and network file systems: process 0 holds an exclusive `flock` on the file for the whole
run and writes its host, pid and start time into it. The kernel drops the lock when the process
dies, however it dies (kill -9 included), so a lock file whose lock is free was left by a run
that no longer exists: it is taken over with a warning. A run that ends removes the file. A
second run on a live workdir is refused with one line naming the holder, before it writes
anything.

Object stores (gs://, s3://) cannot lock a file, so there the lock is a lease: the holder
rewrites the file every LEASE_S / 4 seconds with a fresh heartbeat, and a run finding a heartbeat
younger than LEASE_S refuses. The guarantee is weaker: two runs started within the same second
can both read "free" and both start (the later writer wins the file, and the earlier one notices
at its next heartbeat and stops), a holder stalled for longer than LEASE_S loses its lease, and
the hosts' clocks must agree to within a fraction of LEASE_S.

Readers (lmjax-sample, lmjax-eval, lmjax-export, sweeps reading results) never take the lock.
"""
import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time

from etils import epath

from lmjax import io
from lmjax.errors import RunFailure, UsageError

LOCK_FILE = "lmjax.lock"
LEASE_S = 120.0


class LeaseLost(RunFailure):
    """Another run took over this run's lease on an object-store workdir."""


def _holder_record() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "start_time": time.time(),
            "heartbeat": time.time(), "command": " ".join(sys.argv[:1])}


def describe(record: dict | None) -> str:
    if not record:
        return "an unknown run (the lock file is empty)"
    return (f"pid {record.get('pid')} on host {record.get('host')}, started "
            f"{record.get('started')}")


def _parse(text: str) -> dict | None:
    try:
        record = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _refusal(path, record) -> UsageError:
    return UsageError(f"--workdir={os.path.dirname(str(path)) or '.'}: in use by another "
                      f"lmjax-train ({describe(record)}; lock {path}); wait for it to finish, "
                      "stop it, or pick another --workdir")


class FileLock:
    """flock-based lock for local and network file systems."""

    def __init__(self, workdir: str, warn=print):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.warn = warn
        self.fd = None

    def acquire(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # never truncates a holder's
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                record = _parse(_read_fd(fd))
                os.close(fd)
                raise _refusal(self.path, record) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed the file as this run opened it: open it again
        previous = _parse(_read_fd(fd))
        if previous is not None:
            alive = _alive_here(previous)
            self.warn(f"warning: taking over the lock {self.path} left by {describe(previous)}"
                      + (" (its lock is free: that run has ended)" if alive is None else
                         ", which no longer exists"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_holder_record()) + "\n").encode(), 0)
        os.fsync(fd)
        self.fd = fd

    def release(self):
        if self.fd is None:
            return
        # Removed while still locked; an opener that raced this checks it locked the live file.
        os.unlink(self.path)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _same_file(fd, path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read_fd(fd) -> str:
    try:
        return os.pread(fd, 65536, 0).decode(errors="replace")
    except OSError:
        return ""


def _alive_here(record: dict):
    """True/False for a pid on this host; None when the holder was on another host."""
    if record.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(record.get("pid", -1)), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


class LeaseLock:
    """Heartbeat lease for object stores, where no file lock exists."""

    def __init__(self, workdir: str, warn=print, lease_s: float = LEASE_S):
        self.path = epath.Path(workdir) / LOCK_FILE
        self.warn, self.lease_s = warn, lease_s
        self.record = None
        self.lost = None
        self._stop = threading.Event()
        self._thread = None

    def _read(self):
        return _parse(self.path.read_text()) if self.path.exists() else None

    def acquire(self):
        previous = self._read()
        if previous:
            age = time.time() - float(previous.get("heartbeat", 0))
            if age < self.lease_s:
                raise _refusal(self.path, previous)
            self.warn(f"warning: taking over the lease {self.path} left by {describe(previous)}; "
                      f"its last heartbeat was {age:.0f} s ago (lease {self.lease_s:.0f} s)")
        self.record = _holder_record()
        io.write_text(self.path, json.dumps(self.record) + "\n")
        self._thread = threading.Thread(target=self._beat, name="lmjax-lease", daemon=True)
        self._thread.start()

    def _beat(self):
        while not self._stop.wait(self.lease_s / 4) and self.renew():
            pass

    def renew(self) -> bool:
        """One heartbeat; False (and `lost` set) when another run has taken the lease."""
        current = self._read()
        if current and (current.get("pid"), current.get("host"), current.get("start_time")) \
                != (self.record["pid"], self.record["host"], self.record["start_time"]):
            self.lost = current
            self.warn(f"error: the lease {self.path} was taken by {describe(current)}; "
                      "this run no longer holds the workdir")
            return False
        self.record["heartbeat"] = time.time()
        try:
            io.write_text(self.path, json.dumps(self.record) + "\n")
        except OSError as e:  # a bucket hiccup: the next beat tries again
            self.warn(f"warning: could not renew the lease {self.path}: {e}")
        return True

    def check(self):
        if self.lost is not None:
            raise LeaseLost(f"the lease {self.path} was taken by {describe(self.lost)}")

    def release(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost is None and self.record is not None and self.path.exists():
            self.path.unlink()


def make_lock(workdir: str, warn=print):
    return LeaseLock(workdir, warn) if io.is_remote(workdir) else FileLock(workdir, warn)


@contextlib.contextmanager
def hold(workdir: str, is_main: bool, warn=print):
    """Holds the workdir for a run; process 0 takes the lock, every process learns the outcome.

    Raises UsageError on every process when another run holds it, before anything is written.
    """
    import jax
    lock, error = None, None
    if is_main:
        lock = make_lock(workdir, warn)
        try:
            lock.acquire()
        except UsageError as e:
            error = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        import numpy as np
        refused = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
        if int(refused) and error is None:
            error = UsageError(f"--workdir={workdir}: in use by another lmjax-train (see "
                               "process 0's message)")
    if error is not None:
        raise error
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()
