"""A rejected training run leaves no trace: what its setup created in the workdir goes again.

Setup (the workdir, WORKDIR/data prepared on first use, the checkpoint directory) happens before
some checks can run: the prepared tokens may be too few for one window, the tokenizer larger than
the model's vocabulary, or the workdir's checkpoints those of another model. When such a check
raises a UsageError, every entry the setup added is removed, and the workdir itself when this run
created it; what was there before is left exactly as it was.
"""
import contextlib
import os
import shutil

from lmjax import io
from lmjax.errors import UsageError


@contextlib.contextmanager
def undone_on_usage_error(workdir: str):
    if io.is_remote(workdir):  # object stores: nothing is prepared there (raw text is refused)
        yield
        return
    existed = os.path.isdir(workdir)
    before = set(os.listdir(workdir)) if existed else set()
    try:
        yield
    except UsageError:
        if not existed:
            shutil.rmtree(workdir, ignore_errors=True)
        elif os.path.isdir(workdir):
            for name in set(os.listdir(workdir)) - before:
                path = os.path.join(workdir, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)
        raise
