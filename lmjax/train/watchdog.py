"""Hang watchdog: a thread in every process that notices when the run stops making progress.

The loop reports progress: `beat(step)` after every step, `phase(name)` around compile, restore,
eval and saves, and `sync_point(name)` when it enters a barrier or collective outside the
compiled step. When the time since the last progress exceeds the bound, the watchdog writes a
report (process, host, step, phase, the last sync point entered, every thread's stack) to stderr
and to WORKDIR/hangs/<process>-<step>.txt, then per train.on_hang:
  exit    ends the process with HANG_EXIT_CODE, so the scheduler or launcher restarts the job,
          which resumes from the last checkpoint
  report  keeps waiting (one report per stall)
  off     no watchdog

The bound: train.hang_timeout_s when set (> 0); otherwise max(10 x the median step time, 600 s)
once steps have been timed. Until the first step completes (start-up, restore, the first
compile) and after the last (the end-of-run sample compiles too) the bound is
train.hang_compile_timeout_s. With the automatic bound, eval and checkpoint phases get at least
train.barrier_timeout_s + 60 s, so a stuck barrier ends with its own clearer message first; a
train.hang_timeout_s set by hand bounds them too.
"""
import contextlib
import faulthandler
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import deque

from etils import epath

HANG_EXIT_CODE = 75  # EX_TEMPFAIL: a temporary failure; running the same command again resumes
AUTO_MIN_S = 600.0
AUTO_STEP_FACTOR = 10.0


class Watchdog:
    def __init__(self, train_cfg, workdir: str, process_index: int = 0, exit_fn=os._exit,
                 poll_s: float | None = None):
        self.action = train_cfg.on_hang
        self.fixed_s = float(train_cfg.hang_timeout_s)
        self.first_s = float(train_cfg.hang_compile_timeout_s)
        self.slow_phase_s = float(train_cfg.barrier_timeout_s) + 60.0
        self.workdir, self.process = workdir, process_index
        self.exit_fn = exit_fn
        self.step, self.phase_name, self.last_sync = 0, "startup", "none yet"
        self.last_progress = time.monotonic()
        self.step_times = deque(maxlen=50)
        self.steps_timed = 0
        self.reported_at = None
        self.reports = []
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = None

    # -- progress, from the loop -------------------------------------------------------------
    def beat(self, step: int):
        now = time.monotonic()
        if self.phase_name == "step" and step == self.step + 1:
            self.step_times.append(now - self.last_progress)
            self.steps_timed += 1
        self.step, self.last_progress, self.reported_at = step, now, None
        self.phase_name = "step"

    @contextlib.contextmanager
    def phase(self, name: str):
        previous = self.phase_name
        self.phase_name, self.last_progress, self.reported_at = name, time.monotonic(), None
        try:
            yield
        finally:
            # The step after a save or eval is not timed as a step: it includes the phase's tail.
            self.phase_name, self.last_progress = previous, time.monotonic()
            if previous == "step":
                self.phase_name = "after " + name

    def enter(self, name: str):
        """A phase that lasts until the next one, such as the end-of-run sample and plot."""
        self.phase_name, self.last_progress, self.reported_at = name, time.monotonic(), None

    def sync_point(self, name: str):
        self.last_sync = f"{name} (step {self.step}, {time.strftime('%H:%M:%S')})"

    # -- the bound ---------------------------------------------------------------------------
    def bound_s(self) -> float:
        if self.steps_timed == 0 and self.phase_name in ("startup", "compile", "restore",
                                                         "step", "after compile"):
            bound = self.first_s
        elif self.fixed_s > 0:
            bound = self.fixed_s
        else:
            median = statistics.median(self.step_times) if self.step_times else 0.0
            bound = max(AUTO_STEP_FACTOR * median, AUTO_MIN_S)
        if self.phase_name in ("eval", "checkpoint", "restore") and self.fixed_s <= 0:
            bound = max(bound, self.slow_phase_s)
        if self.phase_name == "finish":  # the sample compiles a generator: a compile's bound
            bound = max(bound, self.first_s)
        return bound

    # -- the thread --------------------------------------------------------------------------
    def __enter__(self):
        if self.action != "off":
            self._thread = threading.Thread(target=self._watch, name="lmjax-watchdog",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self):
        while not self._stop.wait(self.poll_s or min(5.0, max(0.2, self.bound_s() / 20))):
            stalled = time.monotonic() - self.last_progress
            bound = self.bound_s()
            if stalled > bound and self.reported_at is None:
                self.reported_at = self.last_progress
                path = self.report(stalled, bound)
                if self.action == "exit":
                    print(f"error: no progress for {stalled:.0f} s (bound {bound:.0f} s) at step "
                          f"{self.step} in phase {self.phase_name} on process {self.process}; "
                          f"report in {path}; exiting with code {HANG_EXIT_CODE} so the job "
                          "restarts and resumes from the last checkpoint", file=sys.stderr,
                          flush=True)
                    self.exit_fn(HANG_EXIT_CODE)
                    return

    def report(self, stalled: float, bound: float) -> str:
        header = (f"lmjax hang report\nprocess {self.process} on host {socket.gethostname()} "
                  f"(pid {os.getpid()})\nstep {self.step} (the last completed step), phase "
                  f"{self.phase_name}\nno progress for {stalled:.1f} s; bound {bound:.1f} s\n"
                  f"last barrier or collective entered outside the compiled step: "
                  f"{self.last_sync}\nwritten {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n\n"
                  "stacks of every Python thread (most recent call first):\n")
        text = header + _all_stacks()
        print(text, file=sys.stderr, flush=True)
        path = epath.Path(self.workdir) / "hangs" / f"{self.process}-{self.step}.txt"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except OSError as e:
            print(f"warning: could not write the hang report to {path}: {e}", file=sys.stderr)
        self.reports.append(str(path))
        return str(path)


def _all_stacks() -> str:
    # faulthandler writes to a real file descriptor and needs no locks a stuck thread may hold.
    with tempfile.TemporaryFile("w+") as f:
        faulthandler.dump_traceback(f, all_threads=True)
        f.flush()
        f.seek(0)
        return f.read()
