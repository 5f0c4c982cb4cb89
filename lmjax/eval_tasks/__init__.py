"""Task YAMLs for lm-eval that read local JSONL files, and the shipped example data.

  lmjax_choice      multiple choice (ARC's JSONL format)      acc, acc_norm
  lmjax_cloze       last-word prediction (LAMBADA's format)   acc, perplexity
  lmjax_arithmetic  free generation, exact match              exact_match
  lmjax_rolling     document perplexity                       word/byte perplexity, bits_per_byte

See README.md here for the formats and for running a real benchmark's JSONL.
"""
import glob
import os

TASKS_DIR = os.path.dirname(os.path.abspath(__file__))


def task_names() -> list[str]:
    """The `task:` names of the YAMLs in TASKS_DIR."""
    names = []
    for path in sorted(glob.glob(os.path.join(TASKS_DIR, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            names += [line.split(":", 1)[1].strip() for line in f if line.startswith("task:")]
    return names
