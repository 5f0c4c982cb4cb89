"""Metrics writers by name (metrics.writers): JSONL, TensorBoard and Weights & Biases.

A writer is a class built from (cfg, workdir) with write(step, values), truncate_after(step)
and close(); a new one is one entry in WRITERS. Only the main process writes.
"""
import importlib.util
import json
import uuid

import numpy as np
from etils import epath

from lmjax import io
from lmjax.errors import ConfigError

WANDB_RUN_ID_FILE = "wandb_run_id.txt"


class JsonlWriter:
    """One JSON object per line in WORKDIR/metrics.jsonl.

    Local files are appended to; object stores (gs://) cannot append, so there the file is
    rewritten whole.
    """

    requires = None

    def __init__(self, cfg, workdir: str):
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self.remote = io.is_remote(workdir)
        self.lines = None

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
        else:
            with open(self.path, "a") as f:
                f.write(line)

    def close(self):
        pass


class TensorBoardWriter:
    requires = "tensorboardX"

    def __init__(self, cfg, workdir: str):
        from tensorboardX import SummaryWriter
        self.writer = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))

    def truncate_after(self, step: int):
        pass  # TensorBoard shows the newest value of a step; a resumed run overwrites

    def write(self, step: int, record: dict):
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, step)

    def close(self):
        self.writer.close()


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
