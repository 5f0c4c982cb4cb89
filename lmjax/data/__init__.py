"""Training data: what the train loop asks for, whatever the tokenizer or storage.

`make_data(cfg, workdir)` returns a `Data` whose `train` iterator yields host-local numpy batches
{"inputs", "targets"} of shape (global_batch / process_count, seq_len), saves and restores its
position as a small dict, and whose `eval_batches()` yields the same held-out batches every time.
"""
import dataclasses
import os
from typing import Callable, Iterator

import numpy as np

from lmjax.data.tokenizer import ByteTokenizer, CharTokenizer, Tokenizer, load_tokenizer
from lmjax.errors import UsageError

Batch = dict


class RandomWindows:
    """Batch for step s: windows at offsets drawn from (seed, s), as nanoGPT's get_batch.

    Each process takes its own rows of the global batch, so hosts never read the same window.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        if len(tokens) <= seq_len + 1:
            raise UsageError(f"the data has {len(tokens)} tokens, fewer than train.seq_len+1="
                             f"{seq_len + 1}; use more text or a shorter seq_len")
        self.tokens, self.batch_size, self.seq_len, self.seed = tokens, batch_size, seq_len, seed
        per_process = batch_size // process_count
        self.rows = slice(process_index * per_process, (process_index + 1) * per_process)
        self.step = 0

    def batch_at(self, step: int) -> Batch:
        rng = np.random.default_rng([self.seed, step])
        starts = rng.integers(0, len(self.tokens) - self.seq_len - 1, size=self.batch_size)
        starts = starts[self.rows]
        windows = np.stack([self.tokens[s:s + self.seq_len + 1] for s in starts]).astype(np.int32)
        return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        batch = self.batch_at(self.step)
        self.step += 1
        return batch

    def get_state(self) -> dict:
        return {"step": self.step}

    def set_state(self, state: dict) -> None:
        self.step = int(state["step"])


@dataclasses.dataclass
class Data:
    tokenizer: Tokenizer
    train: Iterator[Batch]
    eval_batches: Callable[[], Iterator[Batch]]


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _prepare_text(cfg, workdir: str):
    """Raw text -> tokenizer + uint16/uint32 token arrays in WORKDIR/data, once."""
    out = os.path.join(workdir, "data")
    if os.path.exists(os.path.join(out, "val.npy")):
        return load_tokenizer(out), np.load(os.path.join(out, "train.npy"), mmap_mode="r"), \
            np.load(os.path.join(out, "val.npy"), mmap_mode="r")
    text = _read_text(cfg.data.path)
    if not text:
        raise UsageError(f"data.path={cfg.data.path!r}: the file is empty")
    tokenizer = CharTokenizer.train(text) if cfg.data.tokenizer == "char" else ByteTokenizer()
    ids = np.asarray(tokenizer.encode(text), dtype=np.uint16 if tokenizer.vocab_size < 65536
                     else np.uint32)
    split = int(len(ids) * (1 - cfg.data.valid_fraction))
    os.makedirs(out, exist_ok=True)
    tokenizer.save(out)
    np.save(os.path.join(out, "train.npy"), ids[:split])
    np.save(os.path.join(out, "val.npy"), ids[split:])
    return tokenizer, ids[:split], ids[split:]


def make_data(cfg, workdir: str, process_index: int = 0, process_count: int = 1) -> Data:
    if not cfg.data.path:
        raise UsageError("data.path is empty; set --config.data.path to a text file")
    tokenizer, train_ids, val_ids = _prepare_text(cfg, workdir)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise UsageError(f"model.vocab_size={cfg.model.vocab_size}: smaller than the tokenizer's "
                         f"vocabulary ({tokenizer.vocab_size}); set model.vocab_size >= "
                         f"{tokenizer.vocab_size}")
    t = cfg.train
    train = RandomWindows(train_ids, t.batch_size, t.seq_len, cfg.seed, process_index,
                          process_count)

    def eval_batches():
        # A fixed seed and fixed steps: every eval sees the same windows.
        windows = RandomWindows(val_ids, t.batch_size, t.seq_len, seed=12345,
                                process_index=process_index, process_count=process_count)
        for step in range(t.eval_steps):
            yield windows.batch_at(step)

    return Data(tokenizer, train, eval_batches)
