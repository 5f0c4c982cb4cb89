"""A trace of a few training steps and a table of the XLA ops that took their time.

With train.profile_steps = n > 0 a run traces steps profile_start + 1 ... profile_start + n
(after the compile and any warm-up the start leaves) with jax.profiler into WORKDIR/profile:
plugins/profile/<time>/*.xplane.pb for XProf / TensorBoard's profile tab, and
perfetto_trace.json.gz beside it for ui.perfetto.dev. WORKDIR/profile/ops.txt then lists the
train step's XLA ops by the time they took per step, each with its shape and the model code it
comes from (the HLO's op_name), which is where to look first; ops.csv holds every op.

Which trace events are ops: on a GPU or TPU the device planes' "XLA Ops" lines; on a CPU, where
XLA runs ops on its own host threads ("tf_XLA..."), those threads' events. Only events named
after an instruction of the train step's HLO count, each for its self time (its duration less
that of the events nested in it on the same line: a while loop's body is listed as its ops).
"""
import contextlib
import csv
import io as io_lib
import re
from dataclasses import dataclass, fields

import jax
from etils import epath

from lmjax import io

DEVICE_OPS_LINE = "XLA Ops"
CPU_OPS_THREAD_PREFIX = "tf_XLA"
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = ")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


@dataclass
class OpRow:
    name: str  # the HLO instruction
    ms_per_step: float
    calls_per_step: float
    share: float  # of all ops' time
    shape: str
    op_name: str  # where it comes from in the model (HLO metadata)


def _shape(text: str) -> str:
    """The result shape that starts `text`: one array type, or a (possibly nested) tuple."""
    if not text.startswith("("):
        return text.split(" ", 1)[0]
    depth = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return text[:i + 1]
    return text


def hlo_instructions(hlo_text: str) -> dict:
    """{instruction name: (shape, op_name)} of every instruction in an HLO module's text."""
    found = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            op_name = _OP_NAME.search(line)
            found[match.group(1)] = (_shape(line[match.end():]),
                                     op_name.group(1) if op_name else "")
    return found


def self_times(events):
    """[(name, self ns)] from one trace line's (name, start ns, duration ns) events: each event's
    duration less the durations of the events directly nested in it."""
    events = sorted(events, key=lambda e: (e[1], -e[2]))
    out, stack = [], []  # stack: [name, end, self]
    for name, start, duration in events:
        while stack and start >= stack[-1][1]:
            out.append((stack[-1][0], stack.pop()[2]))
        if stack:
            stack[-1][2] -= duration
        stack.append([name, start + duration, duration])
    out.extend((name, own) for name, _, own in stack)
    return out


def _op_lines(profile: jax.profiler.ProfileData):
    device = [line for plane in profile.planes if plane.name.startswith("/device:")
              for line in plane.lines if line.name == DEVICE_OPS_LINE]
    if device:
        return device
    return [line for plane in profile.planes if plane.name.startswith("/host:")
            for line in plane.lines if line.name.startswith(CPU_OPS_THREAD_PREFIX)]


def op_table(profile: jax.profiler.ProfileData, hlo_text: str, steps: int) -> list[OpRow]:
    """The train step's ops by time per step, largest first."""
    instructions = hlo_instructions(hlo_text)
    total_ns, calls = {}, {}
    for line in _op_lines(profile):
        events = [(e.name, e.start_ns, e.duration_ns) for e in line.events]
        for name, own in self_times(events):
            if name in instructions:
                total_ns[name] = total_ns.get(name, 0) + own
                calls[name] = calls.get(name, 0) + 1
    everything = sum(total_ns.values()) or 1
    rows = [OpRow(name, ns / 1e6 / steps, calls[name] / steps, ns / everything,
                  *instructions[name]) for name, ns in total_ns.items()]
    return sorted(rows, key=lambda r: -r.ms_per_step)


def format_table(rows: list[OpRow], top: int = 40) -> str:
    lines = [f"{'ms/step':>9} {'calls':>7} {'share':>6}  {'op':32} {'shape':30} where",
             *(f"{r.ms_per_step:9.3f} {r.calls_per_step:7.1f} {100 * r.share:5.1f}%  "
               f"{r.name:32} {r.shape:30} {r.op_name}" for r in rows[:top])]
    rest = rows[top:]
    if rest:
        lines.append(f"{sum(r.ms_per_step for r in rest):9.3f} {'':7} "
                     f"{100 * sum(r.share for r in rest):5.1f}%  ({len(rest)} more ops)")
    lines.append(f"{sum(r.ms_per_step for r in rows):9.3f} ms/step of op time in all, summed "
                 "over the threads or devices that ran them")
    return "\n".join(lines)


def to_csv(rows: list[OpRow]) -> str:
    out = io_lib.StringIO()
    writer = csv.writer(out)
    writer.writerow([f.name for f in fields(OpRow)])
    writer.writerows([getattr(r, f.name) for f in fields(OpRow)] for r in rows)
    return out.getvalue()


def newest_xspace(trace_dir) -> epath.Path:
    runs = sorted(epath.Path(trace_dir).glob("plugins/profile/*/*.xplane.pb"))
    if not runs:
        raise FileNotFoundError(f"{trace_dir}: no plugins/profile/*/*.xplane.pb was written")
    return runs[-1]


def trace_ops(trace_dir, compiled, steps: int) -> tuple[epath.Path, list[OpRow]]:
    """(the newest trace under trace_dir, the compiled step's ops in it by time per step)."""
    xspace = newest_xspace(trace_dir)
    profile = jax.profiler.ProfileData.from_file(str(xspace))
    return xspace, op_table(profile, compiled.as_text(), steps)


class StepProfile:
    """Starts a trace before step profile_start + 1 and ends it after profile_start + n."""

    def __init__(self, cfg, workdir: str, first_step: int, log=print):
        t = cfg.train
        self.first, self.last = t.profile_start + 1, t.profile_start + t.profile_steps
        self.dir = epath.Path(workdir) / "profile"
        self.enabled = t.profile_steps > 0 and first_step < self.first
        self.tracing, self.log, self.before = False, log, None
        if t.profile_steps > 0 and not self.enabled:
            log(f"train.profile_start={t.profile_start}: this run resumes at step {first_step}, "
                "past the steps to profile, so none is traced")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # A run that stops inside the window (an error, a preemption) still ends its trace, so
        # the process can trace again; the table is written only for a whole window.
        if self.tracing:
            jax.profiler.stop_trace()
            self.tracing = False

    def step(self, step: int):
        """A context for running step `step` (counted from 1): traced when in the window."""
        if self.enabled and step == self.first:
            # Steps run asynchronously: the earlier ones finish first, or the trace holds them.
            jax.block_until_ready(self.before)
            self.dir.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.dir), create_perfetto_trace=True)
            self.tracing = True
        if not self.tracing:
            return contextlib.nullcontext()
        return jax.profiler.StepTraceAnnotation("train", step_num=step)

    def step_done(self, step: int, outputs, compiled, is_main: bool):
        """Ends the trace after the window's last step and writes ops.txt."""
        if step == self.first - 1:
            self.before = outputs
        if not (self.tracing and step == self.last):
            return
        jax.block_until_ready(outputs)
        jax.profiler.stop_trace()
        self.tracing = False
        if not is_main:
            return
        xspace, rows = trace_ops(self.dir, compiled, self.last - self.first + 1)
        io.write_text(self.dir / "ops.txt",
                      f"steps {self.first}-{self.last}, trace {xspace.parent}\n"
                      + format_table(rows) + "\n")
        io.write_text(self.dir / "ops.csv", to_csv(rows))
        self.log(f"profiled steps {self.first}-{self.last}: trace in {xspace.parent} "
                 f"(XProf / TensorBoard, Perfetto), the ops by time in {self.dir / 'ops.txt'}")
