"""The grain input pipeline over prepared token shards.

    windows (seq_len+1 tokens, concatenated across documents, every `stride` tokens)
      -> shuffle(seed, epoch) -> repeat -> this host's rows of each global batch -> batch
      -> background prefetch -> {"inputs", "targets", "segment_ids", "positions"} (int32)

Positions are counted in windows of the global stream: global batch s holds windows
s*B .. s*B+B-1 of the (reshuffled every epoch) order, and process p of P takes the contiguous
rows p*B/P .. (p+1)*B/P-1 of it. So the processes of an epoch read disjoint windows that together
cover it, the global batch is the same for any process count, and the iterator state is one
number (windows consumed) that a run on another topology or batch size can resume from by
seeking, never replaying.
"""
import sys

import grain
import numpy as np

from lmjax.data.store import TokenSplit
from lmjax.errors import UsageError

STATE_VERSION = 1


def shuffle_seed(seed: int) -> int:
    # Hashed so that seed s epoch e+1 is not seed s+1 epoch e (grain adds the epoch to the seed).
    return int(np.random.SeedSequence([seed, 0x6C6D6A6178]).generate_state(1)[0])


class PackedWindows:
    """Windows of `seq_len + 1` tokens of one split, read a batch at a time by window index.

    Window i starts at `starts[i]` if given, else at i * stride. A window spans document
    boundaries; segment_ids number the documents inside it from 1 and positions restart at 0 at
    each document start (and at the window start), so a model can stop attention crossing them.
    """

    def __init__(self, split: TokenSplit, seq_len: int, stride: int = 0,
                 starts: np.ndarray | None = None):
        self.split, self.seq_len = split, seq_len
        self.stride = stride or seq_len
        self.starts = starts
        if len(split) < seq_len + 1:
            raise UsageError(f"the {split.name} split has {len(split)} tokens, fewer than "
                             f"train.seq_len+1={seq_len + 1}; use more text or a shorter seq_len")
        self._length = (len(starts) if starts is not None
                        else (len(split) - seq_len - 1) // self.stride + 1)
        if self._length >= 1 << 32:  # grain's index shuffle works on 32-bit indices
            raise UsageError(f"the {split.name} split makes {self._length:,} windows, more than "
                             "2**32; raise data.window_stride")

    def __len__(self) -> int:
        return self._length

    def window_starts(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        return self.starts[indices] if self.starts is not None else indices * self.stride

    def read_batch(self, indices: np.ndarray) -> dict:
        """The windows `indices` as one batch: gathered and labelled in a few numpy calls."""
        starts = self.window_starts(indices)
        tokens = self.split.read_rows(starts, self.seq_len + 1).astype(np.int32)
        where = starts[:, None] + np.arange(self.seq_len)
        document = self.split.document_of(where)
        doc_start = np.maximum(self.split.doc_starts[document], starts[:, None])
        return {"inputs": np.ascontiguousarray(tokens[:, :-1]),
                "targets": np.ascontiguousarray(tokens[:, 1:]),
                "segment_ids": (document - document[:, :1] + 1).astype(np.int32),
                "positions": (where - doc_start).astype(np.int32)}


class HostRows(grain.MapDataset):
    """Item i of this host = global window offset + s*B + p*b + j, with i = s*b + j, b = B/P."""

    def __init__(self, parent: grain.MapDataset, global_batch: int, process_index: int,
                 process_count: int, offset: int = 0, length: int = sys.maxsize):
        super().__init__(parent)
        self._global_batch, self._host_batch = global_batch, global_batch // process_count
        self._process_index, self._offset, self._length = process_index, offset, length

    def __len__(self) -> int:
        return self._length

    def global_index(self, index: int) -> int:
        step, row = divmod(index, self._host_batch)
        return (self._offset + step * self._global_batch
                + self._process_index * self._host_batch + row)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self.global_index(index)]

    def __str__(self) -> str:
        return f"HostRows(B={self._global_batch}, p={self._process_index}, offset={self._offset})"


def train_dataset(windows: PackedWindows, global_batch: int, seed: int, process_index: int,
                  process_count: int, position: int = 0) -> grain.MapDataset:
    """Host-local batches starting at global window `position` (a MapDataset, index = step)."""
    # Grain shuffles and slices window indices; the tokens of a batch are read in one go.
    ds = grain.MapDataset.range(len(windows)).shuffle(seed=shuffle_seed(seed)).repeat()
    ds = HostRows(ds, global_batch, process_index, process_count, offset=position)
    return ds.batch(global_batch // process_count, drop_remainder=True).map(windows.read_batch)


class TrainIterator:
    """Yields host-local train batches; get_state()/set_state() save and seek its position."""

    def __init__(self, windows: PackedWindows, global_batch: int, seed: int, process_index: int,
                 process_count: int, prefetch: int, dataset_id: str):
        self.windows, self.global_batch, self.seed = windows, global_batch, seed
        self.process_index, self.process_count = process_index, process_count
        self.prefetch, self.dataset_id = prefetch, dataset_id
        self.position = 0
        self._iterator = None

    def _start(self):
        ds = train_dataset(self.windows, self.global_batch, self.seed, self.process_index,
                           self.process_count, self.position)
        options = grain.ReadOptions(num_threads=1 if self.prefetch else 0,
                                    prefetch_buffer_size=self.prefetch)
        return iter(ds.to_iter_dataset(options))

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._iterator is None:
            self._iterator = self._start()
        batch = next(self._iterator)
        self.position += self.global_batch
        return batch

    @property
    def epoch(self) -> float:
        return self.position / len(self.windows)

    def _identity(self) -> dict:
        return {"seed": self.seed, "seq_len": self.windows.seq_len,
                "stride": self.windows.stride, "dataset": self.dataset_id}

    def get_state(self) -> dict:
        return {"version": STATE_VERSION, "position": self.position,
                "windows_per_epoch": len(self.windows), **self._identity()}

    def set_state(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION or "position" not in state:
            raise UsageError(f"data iterator state {state!r}: not written by this lmjax version "
                             "of the pipeline; start a new workdir")
        for key, value in self._identity().items():
            if state.get(key) != value:
                raise UsageError(f"data iterator state: saved with {key}={state.get(key)!r}, "
                                 f"but this run has {key}={value!r}; the same data order cannot "
                                 "continue, so restore with the saved setting or use a new workdir")
        self.position = int(state["position"])
        self.close()

    def close(self) -> None:
        if self._iterator is not None and hasattr(self._iterator, "close"):
            self._iterator.close()
        self._iterator = None


def eval_windows(split: TokenSplit, seq_len: int, count: int) -> PackedWindows:
    """`count` windows spread evenly over the split, in order: the same held-out set each time."""
    last = len(split) - seq_len - 1
    if last < 0:
        raise UsageError(f"the valid split has {len(split)} tokens, fewer than "
                         f"train.seq_len+1={seq_len + 1}; hold out more text or shorten seq_len")
    starts = np.linspace(0, last, num=count).round().astype(np.int64) if count > 1 else \
        np.zeros(count, np.int64)
    return PackedWindows(split, seq_len, starts=starts)


def eval_batches(windows: PackedWindows, global_batch: int, steps: int, process_index: int,
                 process_count: int):
    ds = HostRows(grain.MapDataset.range(len(windows)), global_batch, process_index,
                  process_count, length=steps * (global_batch // process_count))
    ds = ds.batch(global_batch // process_count, drop_remainder=True).map(windows.read_batch)
    for step in range(steps):
        yield ds[step]
