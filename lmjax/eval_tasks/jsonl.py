"""Local JSONL files as lm-eval datasets, checked line by line.

A task YAML names this loader and its files:

  custom_dataset: !function lmjax.eval_tasks.jsonl.load
  dataset_kwargs:
    data_files: {test: data/cloze_time_machine.jsonl}
    required: [text]

A relative path is read from the current directory when it exists there, else from this package's
directory (where the shipped examples live). Every line must be a JSON object holding the
`required` fields; the first line that is not names its file and line number.
"""
import json
import os

from lmjax.errors import UsageError

HERE = os.path.dirname(os.path.abspath(__file__))


def resolve(path: str) -> str:
    path = os.path.expanduser(path)
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(HERE, path)


def read_rows(path: str, required=()) -> list[dict]:
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such task data file; fix data_files in the task YAML")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{path}:{number}: not valid JSON ({e.msg} at column "
                                 f"{e.colno}); each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise UsageError(f"{path}:{number}: a JSON {type(row).__name__}, not an object; "
                                 "each line must be one JSON object")
            missing = [name for name in required if name not in row]
            if missing:
                raise UsageError(f"{path}:{number}: missing field {missing[0]!r}; every line "
                                 f"needs {', '.join(required)}")
            rows.append(row)
    if not rows:
        raise UsageError(f"{path}: holds no examples; write one JSON object per line")
    return rows


def load(data_files=None, required=(), **_):
    """A datasets.DatasetDict of the splits in `data_files` ({split: path}).

    Other keyword arguments (lm-eval passes the task metadata along) are ignored.
    """
    import datasets
    if not isinstance(data_files, dict) or not data_files:
        raise UsageError("task YAML: dataset_kwargs.data_files must map a split to a JSONL "
                         "file, e.g. {test: data/my_task.jsonl}")
    splits = {}
    for split, path in data_files.items():
        path = resolve(path)
        rows = read_rows(path, tuple(required))
        try:
            splits[split] = datasets.Dataset.from_list(rows)
        except Exception as e:  # pyarrow refuses fields whose type changes between lines
            raise UsageError(f"{path}: lines disagree on a field's type ({type(e).__name__}: "
                             f"{str(e).splitlines()[0]}); give every line the same types") \
                from None
    return datasets.DatasetDict(splits)
