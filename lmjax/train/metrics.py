"""Metrics writers by name (metrics.writers): JSONL, TensorBoard and Weights & Biases.

A writer is a class built from (cfg, workdir) with write(step, values), truncate_after(step)
and close(); a new one is one entry in WRITERS. Only the main process writes.
"""
import glob
import importlib.util
import json
import os
import sys
import uuid

import numpy as np
from etils import epath

from lmjax import io
from lmjax.errors import ConfigError

WANDB_RUN_ID_FILE = "wandb_run_id.txt"


class JsonlWriter:
    """One JSON object per line in WORKDIR/metrics.jsonl.

    Local files are appended to, whole lines only (a write a full disk cuts short is undone and
    retried at the next write); object stores (gs://) cannot append, so there the file is
    rewritten whole.
    """

    requires = None

    def __init__(self, cfg, workdir: str):
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self.remote = io.is_remote(workdir)
        self.lines = None
        self.backlog, self.warned = [], False  # lines a full disk has not taken yet

    def read_lines(self) -> list[str]:
        if not self.path.exists():
            return []
        return [line + "\n" for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int):
        """On resume, drops lines past the restored step so the file reads as one clean run."""
        kept = []
        for line in self.read_lines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):
                pass  # a line half-written when the process died
        io.write_text(self.path, "".join(kept))
        self.lines = kept if self.remote else None

    def write(self, step: int, record: dict):
        line = json.dumps(record) + "\n"
        if self.remote:
            self.lines = self.read_lines() if self.lines is None else self.lines
            self.lines.append(line)
            io.write_text(self.path, "".join(self.lines))
            return
        self.backlog.append(line)
        data = "".join(self.backlog).encode()
        with open(self.path, "ab", buffering=0) as f:  # unbuffered: nothing left to flush later
            size = f.seek(0, os.SEEK_END)
            try:
                done = 0
                while done < len(data):
                    done += f.write(data[done:])
            except OSError as e:
                # A full disk: cut back to whole lines; the lines wait for the next write.
                f.truncate(size)
                if not self.warned:
                    print(f"warning: could not append to {self.path} ({e.strerror or e}); "
                          "holding the lines in memory and retrying at the next log step",
                          file=sys.stderr, flush=True)
                    self.warned = True
                return
        self.backlog = []

    def close(self):
        pass


def tensorboardx_events():
    """(EventsWriter, event_pb2, summary_pb2) of tensorboardX, imported without torch.

    tensorboardX imports torch, when it is installed, only to recognise torch tensors; lmjax
    logs Python floats, and torch's import costs ~200 MiB of RSS. A process that already
    imported torch keeps it.
    """
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # `import torch` raises ImportError while tensorboardX loads
    try:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2, summary_pb2
    finally:
        if blocked:
            del sys.modules["torch"]
    return EventsWriter, event_pb2, summary_pb2


class TensorBoardWriter:
    """TensorBoard event files under WORKDIR/tensorboard, written from the loop's thread.

    tensorboardX's SummaryWriter writes from a background thread that dies on a full disk (and
    then blocks the loop on its full queue); this writes with its synchronous EventsWriter
    instead, one event per log step, flushed at once. A write a full disk cuts short is cut
    back to whole records and retried at the next log step in a new event file.
    """

    requires = "tensorboardX"

    def __init__(self, cfg, workdir: str):
        self.prefix = str(epath.Path(workdir) / "tensorboard" / "events")
        epath.Path(self.prefix).parent.mkdir(parents=True, exist_ok=True)
        self.remote = io.is_remote(workdir)
        self.events, self.files, self.good_size = None, 0, 0
        self.backlog, self.warned = [], False

    def truncate_after(self, step: int):
        pass  # TensorBoard shows the newest value of a step; a resumed run overwrites

    def _open(self):
        EventsWriter, _, _ = tensorboardx_events()
        self.files += 1
        # The suffix keeps names apart: EventsWriter names files by the second, and opening an
        # existing name would empty it.
        suffix = f".{os.getpid()}.{self.files}"
        self.events = EventsWriter(self.prefix, filename_suffix=suffix)
        self.path = None if self.remote else glob.glob(f"{self.prefix}.out.tfevents.*{suffix}")[0]
        self.good_size = 0

    def write(self, step: int, record: dict):
        import time
        _, event_pb2, summary_pb2 = tensorboardx_events()
        values = [summary_pb2.Summary.Value(tag=key, simple_value=float(value))
                  for key, value in record.items()
                  if key != "step" and isinstance(value, (int, float))]
        self.backlog.append(event_pb2.Event(wall_time=time.time(), step=int(step),
                                            summary=summary_pb2.Summary(value=values)))
        try:
            if self.events is None:
                self._open()
            for event in self.backlog:
                self.events.write_event(event)
            self.events.flush()
        except OSError as e:
            self._cut_back(e)
            return
        self.backlog = []
        if not self.remote:
            self.good_size = os.path.getsize(self.path)

    def _cut_back(self, error: OSError):
        events, self.events = self.events, None
        if events is not None:
            try:
                events.close()
            except OSError:
                pass  # the buffered tail cannot be written; the file closes anyway
            if not self.remote:
                os.truncate(self.path, self.good_size)
        if not self.warned:
            print(f"warning: could not write TensorBoard events under {self.prefix} "
                  f"({error.strerror or error}); holding them in memory and retrying at the "
                  "next log step", file=sys.stderr, flush=True)
            self.warned = True

    def close(self):
        if self.events is not None:
            try:
                self.events.close()
            except OSError as e:
                self._cut_back(e)


class WandbWriter:
    """A Weights & Biases run; a resumed training run continues the same run id.

    The id is kept in WORKDIR/wandb_run_id.txt. WANDB_MODE=offline writes the run under
    WORKDIR/wandb/ for a later `wandb sync`.
    """

    requires = "wandb"

    def __init__(self, cfg, workdir: str):
        import wandb
        id_file = epath.Path(workdir) / WANDB_RUN_ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        if not id_file.exists():
            io.write_text(id_file, run_id)
        m = cfg.metrics
        local_dir = None if io.is_remote(workdir) else str(workdir)
        self.run = wandb.init(project=m.wandb_project,
                              name=m.wandb_name or epath.Path(workdir).name,
                              group=m.wandb_group or None, tags=list(m.wandb_tags) or None,
                              config=cfg.to_dict(), id=run_id, resume="allow", dir=local_dir,
                              reinit="finish_previous")

    def truncate_after(self, step: int):
        pass  # wandb keeps the history; steps logged again after a resume are ignored by it

    def write(self, step: int, record: dict):
        self.run.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def close(self):
        self.run.finish()


WRITERS = {
    "jsonl": JsonlWriter,
    "tensorboard": TensorBoardWriter,
    "wandb": WandbWriter,
}


def check_writer_packages(names):
    """ConfigError for a writer whose package is not installed, before anything runs."""
    for name in names:
        package = WRITERS[name].requires
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(f"metrics.writers: {name!r} needs the {package} package, which is "
                              f"not installed; pip install 'lmjax[{name}]' or remove {name!r}")


def writer_names(cfg) -> tuple:
    names = tuple(cfg.metrics.writers)
    if not cfg.metrics.tensorboard:
        names = tuple(n for n in names if n != "tensorboard")
    return names


class MetricsWriter:
    """Every configured writer at once; does nothing on processes other than the main one."""

    def __init__(self, cfg, workdir: str, enabled: bool = True):
        self.writers = [WRITERS[name](cfg, workdir) for name in writer_names(cfg)] \
            if enabled else []

    def truncate_after(self, step: int):
        for writer in self.writers:
            writer.truncate_after(step)

    def write(self, step: int, values: dict):
        record = {"step": int(step), **{k: _plain(v) for k, v in values.items()}}
        for writer in self.writers:
            writer.write(step, record)

    def close(self):
        for writer in self.writers:
            writer.close()


def _plain(value):
    return np.asarray(value).item() if not isinstance(value, (str, int, float)) else value
