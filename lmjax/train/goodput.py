"""Goodput: where a run's wall time went, cumulative over every restart of the same workdir.

Time is split into buckets by what the process was doing; exactly one bucket is open at any
moment, so the buckets add up to the wall time by construction:
  startup      process start (imports included) to the first compile: init or restore, data
  compile      compiling the train step
  productive   training steps that advanced the run
  lost         steps recomputed after a restart: the previous run had already reached them,
               but died before a checkpoint kept them
  eval         evaluation during training
  checkpoint   the blocking part of saves (and the final wait for async ones)
  other        logging past the last step, the end-of-run sample, plot and summary
goodput = productive / total.

The ledger WORKDIR/goodput.json (rewritten whole at each log step, on process 0) carries the
totals of earlier runs of the workdir and the last step they reached. Time between a process's
last ledger write and its death, and between runs, is not seen and not counted.
"""
import contextlib
import os
import time

from etils import epath

from lmjax import io

LEDGER = "goodput.json"
BUCKETS = ("startup", "compile", "productive", "lost", "eval", "checkpoint", "other")


def process_start_time() -> float:
    """Wall-clock time this process started (from /proc where it exists), else now."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat(5): start time in clock ticks after boot
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


class Goodput:
    def __init__(self, workdir: str, enabled: bool = True, start_time: float | None = None):
        self.path = epath.Path(workdir) / LEDGER
        self.enabled = enabled
        # Wall time before this object existed (imports, distributed start-up) is startup.
        start = process_start_time() if start_time is None else start_time
        self.buckets = dict.fromkeys(BUCKETS, 0.0)
        self.bucket, self.since = "startup", time.monotonic() - max(0.0, time.time() - start)
        self.previous = self._read_ledger()
        self.lost_steps = 0
        self.redo_until = 0  # steps up to this one were reached before: recomputing them is lost

    def _read_ledger(self) -> dict:
        if not self.path.exists():
            return {}
        try:
            ledger = io.read_json(self.path)
        except (ValueError, OSError):
            return {}
        return ledger if isinstance(ledger, dict) else {}

    def resumed_at(self, step: int):
        """The run continues from `step`; steps the earlier runs reached past it are redone."""
        self.redo_until = max(step, int(self.previous.get("step", 0)))

    def enter(self, bucket: str) -> str:
        """Closes the open bucket and opens `bucket`; returns the one that was open."""
        now = time.monotonic()
        self.buckets[self.bucket] += now - self.since
        previous, self.bucket, self.since = self.bucket, bucket, now
        return previous

    @contextlib.contextmanager
    def phase(self, bucket: str):
        previous = self.enter(bucket)
        try:
            yield
        finally:
            self.enter(previous)

    def step_bucket(self, step: int) -> str:
        """The bucket of training step `step` (1-based): lost if an earlier run reached it."""
        if step <= self.redo_until:
            self.lost_steps += 1
            return "lost"
        return "productive"

    def current(self) -> dict:
        """This run's buckets so far, the open one included."""
        buckets = dict(self.buckets)
        buckets[self.bucket] += time.monotonic() - self.since
        return buckets

    def totals(self, step: int) -> dict:
        """Cumulative figures over every run of the workdir, this one up to now."""
        now = self.current()
        earlier = self.previous.get("buckets_s", {})
        buckets = {b: now[b] + float(earlier.get(b, 0.0)) for b in BUCKETS}
        total = sum(buckets.values())
        return {"goodput": buckets["productive"] / total if total > 0 else 0.0,
                "total_s": total, "buckets_s": buckets,
                "this_run_s": sum(now.values()),
                "runs": int(self.previous.get("runs", 0)) + 1,
                "lost_steps": int(self.previous.get("lost_steps", 0)) + self.lost_steps,
                "step": max(int(step), int(self.previous.get("step", 0)))}

    def metrics(self, step: int) -> dict:
        """Flat numbers for the metrics writers; also rewrites the ledger."""
        totals = self.save(step)
        record = {"goodput": totals["goodput"]}
        record.update({f"goodput/{b}_s": v for b, v in totals["buckets_s"].items()})
        return record

    def save(self, step: int) -> dict:
        totals = self.totals(step)
        if self.enabled:
            try:
                io.write_json(self.path, totals)
            except OSError:
                pass  # a full disk must not stop training over accounting; the next write retries
        return totals
