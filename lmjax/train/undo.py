"""A rejected training run leaves no trace: what its setup created in the workdir goes again.

Setup (the workdir, WORKDIR/data prepared on first use, the checkpoint directory) happens before
some checks can run: the prepared tokens may be too few for one window, the tokenizer larger than
the model's vocabulary, or the workdir's checkpoints those of another model. When such a check
fails, `NewEntries.remove()` takes away every entry added since it looked, and the workdir itself
when it did not exist then; what was there before is left exactly as it was.
"""
import contextlib
import os
import shutil

from lmjax import io


class NewEntries:
    """What a local workdir holds now, to remove later whatever was added since."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        # Object stores: nothing is prepared there (raw text is refused for remote workdirs).
        self.remote = io.is_remote(workdir)
        self.existed = not self.remote and os.path.isdir(workdir)
        self.before = set(os.listdir(workdir)) if self.existed else set()

    def remove(self) -> None:
        if self.remote:
            return
        if not self.existed:
            shutil.rmtree(self.workdir, ignore_errors=True)
            return
        if not os.path.isdir(self.workdir):
            return
        for name in set(os.listdir(self.workdir)) - self.before:
            path = os.path.join(self.workdir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
