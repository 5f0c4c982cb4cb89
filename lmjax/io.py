"""Small file helpers for local and object-store (gs://) paths: whole-or-nothing writes, reads."""
import json
import os

from etils import epath

from lmjax.errors import UsageError


def is_remote(path) -> bool:
    """Object stores (gs://, s3://) have no directories, appends or atomic renames of folders."""
    return "://" in str(path)


def write_text(path, text: str) -> None:
    """Writes `path` whole or not at all: a temporary file beside it, then a rename."""
    path = epath.Path(path)
    tmp = path.parent / (path.name + ".tmp")
    try:
        tmp.write_text(text)
    except OSError:
        # A full disk: the old file stays whole, and no partial temporary is left to use space.
        if tmp.exists():
            tmp.unlink()
        raise
    tmp.replace(path)


def write_bytes(path, data: bytes) -> None:
    path = epath.Path(path)
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_json(path, payload, indent: int | None = 1) -> None:
    write_text(path, json.dumps(payload, indent=indent) + ("\n" if indent is not None else ""))


def read_json(path):
    """The JSON in `path`; a damaged file is a UsageError naming it, not a traceback."""
    try:
        return json.loads(epath.Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid JSON ({e}); restore the file or recreate it with "
                         "the command that wrote it") from None


def move(source, target) -> None:
    """Moves a file or directory to `target` (its parent is created); works on gs:// as well."""
    source, target = epath.Path(source), epath.Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_remote(source):
        # Object stores cannot rename a prefix: copy every object, then delete the originals.
        source.copytree(target, dirs_exist_ok=True) if source.is_dir() else source.copy(target)
        source.rmtree() if source.is_dir() else source.unlink()
    else:
        os.replace(os.fspath(source), os.fspath(target))
