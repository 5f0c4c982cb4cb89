"""Runs sweep points as `lmjax-train` child processes, N at a time, and keeps the results table.

A point is finished when its workdir holds summary.json (written by lmjax-train at the end), so
a re-run skips it; any other point is started again with the same command, which resumes from
its latest checkpoint. Children share this process group: Ctrl-C reaches them too, and SIGTERM
here is passed on to them so they can checkpoint before exiting.
"""
import csv
import dataclasses
import hashlib
from io import StringIO
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time

from etils import epath

from lmjax import io

RESULT_KEYS = ("step", "train_loss", "eval_loss", "tokens", "wall_time_s", "num_params")


@dataclasses.dataclass
class Point:
    name: str
    overrides: dict
    workdir: str
    status: str = "pending"  # pending | running | done | failed
    error: str = ""
    summary: dict = dataclasses.field(default_factory=dict)
    returncode: int | None = None
    after: str = ""  # a point of the same sweep that must finish first (a branch's source)


def log_dir(root: str) -> str:
    """ROOT/logs, or a local directory for a remote ROOT (child output goes to local files)."""
    if not io.is_remote(root):
        return os.path.join(root, "logs")
    digest = hashlib.sha1(root.encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), "lmjax-sweep-logs", digest)


def read_summary(workdir: str) -> dict | None:
    path = epath.Path(workdir) / "summary.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return None


def error_line(log_path: str) -> str:
    """The child's `error: ...` line, else the last line it printed (a traceback's last line)."""
    try:
        with open(log_path, errors="replace") as f:
            lines = [line.strip() for line in f.read()[-20000:].splitlines() if line.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[:300]
    return lines[-1][:300] if lines else ""


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return "" if value is None else value


def write_results(points: list[Point], root: str) -> None:
    """ROOT/results.csv (one row per point) and ROOT/results.png, replaced atomically."""
    from lmjax.study import plot
    fields = list(dict.fromkeys(f for p in points for f in p.overrides))
    header = ["name", *fields, "status", *RESULT_KEYS, "error"]
    buffer = StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    rows = []
    for p in points:
        row = {"name": p.name, **p.overrides, "status": p.status, "error": p.error}
        row.update({k: p.summary.get(k) for k in RESULT_KEYS})
        rows.append(row)
        writer.writerow([_fmt(row.get(h)) for h in header])
    root_path = epath.Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    io.write_text(root_path / "results.csv", buffer.getvalue())
    plot.plot_sweep(rows, fields, str(root_path / "results.png"))
    finished = [p.workdir for p in points if p.status == "done"]
    if finished:
        plot.plot_runs(finished, str(root_path / "curves.png"), title="sweep points")


def child_env(root: str) -> dict:
    """The children's environment: points that share shapes share compiled programs through
    jax's persistent compilation cache in ROOT/.jax_cache, unless one is configured already."""
    env = dict(os.environ)
    if not io.is_remote(root) and "JAX_COMPILATION_CACHE_DIR" not in env:
        env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.path.abspath(root), ".jax_cache")
    return env


def _next_ready(queue: list, by_name: dict, waiting: bool):
    """Pops the first point whose `after` point is done; one whose `after` failed (or can no
    longer finish) comes back marked failed. None while every queued point waits on a running
    one."""
    for i, p in enumerate(queue):
        source = by_name.get(p.after)
        if source is None or source.status == "done":
            return queue.pop(i)
        if source.status == "failed" or (not waiting and source not in queue):
            queue.pop(i)
            p.status, p.error = "failed", f"its source point {p.after} did not finish"
            return p
    return None


def run_points(points: list[Point], commands: dict, root: str, parallel: int = 1,
               selected: set | None = None) -> list[Point]:
    """Runs every unfinished point (of `selected` names, if given); returns the failed ones
    (also listed on stderr)."""
    from tqdm import tqdm
    env = child_env(root)
    logs = log_dir(root)
    os.makedirs(logs, exist_ok=True)
    for p in points:
        summary = read_summary(p.workdir)
        if summary is not None:
            p.status, p.summary = "done", summary
    todo = [p for p in points if p.status == "pending"
            and (selected is None or p.name in selected)]
    skipped = sum(p.status == "done" for p in points)
    if skipped:
        print(f"{skipped} of {len(points)} points already finished, skipping them", flush=True)
    write_results(points, root)

    running: dict[str, tuple[Point, subprocess.Popen, object]] = {}

    def stop_children(signum, frame):
        for _, child, _ in running.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.time() + 60
        for _, child, _ in running.values():
            try:
                child.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                child.kill()
        sys.exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop_children)
    bar = tqdm(total=len(todo) + skipped, initial=skipped, desc="sweep", unit="point",
               file=sys.stderr)
    try:
        queue = list(todo)
        by_name = {p.name: p for p in points}
        while queue or running:
            while queue and len(running) < parallel:
                p = _next_ready(queue, by_name, bool(running))
                if p is None:
                    break
                if p.status == "failed":
                    bar.update(1)
                    write_results(points, root)
                    continue
                log = open(os.path.join(logs, p.name + ".log"), "a")
                log.write(f"\n$ {' '.join(commands[p.name])}\n")
                log.flush()
                child = subprocess.Popen(commands[p.name], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
                p.status = "running"
                running[p.name] = (p, child, log)
            time.sleep(0.2)
            for name, (p, child, log) in list(running.items()):
                if child.poll() is None:
                    continue
                log.close()
                del running[name]
                p.returncode = child.returncode
                summary = read_summary(p.workdir)
                if child.returncode == 0 and summary is not None:
                    p.status, p.summary = "done", summary
                else:
                    p.status = "failed"
                    reason = error_line(os.path.join(logs, p.name + ".log"))
                    p.error = f"exit {child.returncode}: {reason}" if reason else \
                        f"exit {child.returncode}"
                bar.update(1)
                bar.set_postfix_str(f"{p.name}: {p.status}")
                write_results(points, root)
    except BaseException as e:
        # Ctrl-C from a terminal reached the children too: give them time to checkpoint and
        # exit; on any other failure here, stop them rather than leave them orphaned.
        for _, child, _ in running.values():
            if not isinstance(e, KeyboardInterrupt) and child.poll() is None:
                child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        raise
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous)

    failed = [p for p in points if p.status == "failed"]
    done = sum(p.status == "done" for p in points)
    print(f"{done} of {len(points)} points finished; results in "
          f"{os.path.join(root, 'results.csv')} and {os.path.join(root, 'results.png')}")
    if failed:
        print(f"{len(failed)} points failed (logs in {logs}):", file=sys.stderr)
        for p in failed:
            print(f"  {p.name}: {p.error}", file=sys.stderr)
    return failed
