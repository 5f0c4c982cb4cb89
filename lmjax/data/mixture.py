"""Weighted mixtures of prepared directories (data.mixture = (("DIR_A", 0.7), ("DIR_B", 0.3))).

Every global batch of B windows is split between the sources by a multinomial draw of B with
the normalised weights, seeded by (seed, step): the proportions are exact in expectation and the
same for any process count. Source i's rows come next from its own shuffled, repeating window
order (as one source's pipeline), and the global batch lists source 0's rows first, then source
1's, ...; process p of P takes rows p*B/P .. (p+1)*B/P-1. The iterator state is the step and
each source's windows consumed: a resumed run seeks every source and draws the same batches.
"""
import os

import grain
import numpy as np

from lmjax.data.pipeline import PackedWindows
from lmjax.errors import UsageError

STATE_VERSION = 1
_SALT = 0x6D6978  # keeps the per-step draw apart from the window shuffles


def source_name(directory: str) -> str:
    """The name a source's metrics carry: its directory's last component."""
    return os.path.basename(os.path.normpath(directory))


class MixtureIterator:
    """Yields host-local train batches of a weighted mixture; get_state()/set_state() seek."""

    def __init__(self, sources: list[PackedWindows], weights, global_batch: int, seed: int,
                 process_index: int, process_count: int, dataset_ids: list[str]):
        self.sources, self.global_batch, self.seed = sources, global_batch, seed
        weights = np.asarray(weights, np.float64)
        self.probabilities = weights / weights.sum()
        self.process_index, self.host_batch = process_index, global_batch // process_count
        self.dataset_ids = list(dataset_ids)
        self.orders = [grain.MapDataset.range(len(w)).shuffle(seed=self._shuffle_seed(i)).repeat()
                       for i, w in enumerate(sources)]
        self.step = 0
        self.positions = [0] * len(sources)

    def _shuffle_seed(self, source: int) -> int:
        return int(np.random.SeedSequence([self.seed, _SALT, source]).generate_state(1)[0])

    def counts(self, step: int) -> np.ndarray:
        """Rows of each source in global batch `step`: a function of (seed, step) only."""
        rng = np.random.default_rng([self.seed, _SALT, step])
        return rng.multinomial(self.global_batch, self.probabilities)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        counts = self.counts(self.step)
        first, last = self.process_index * self.host_batch, (self.process_index + 1) * self.host_batch
        parts, begin = [], 0
        for i, count in enumerate(counts):
            lo, hi = max(begin, first), min(begin + count, last)
            if lo < hi:  # this host's rows that fall in source i's block
                offsets = range(self.positions[i] + lo - begin, self.positions[i] + hi - begin)
                indices = np.asarray([self.orders[i][k] for k in offsets], np.int64)
                parts.append(self.sources[i].read_batch(indices))
            begin += count
        for i, count in enumerate(counts):
            self.positions[i] += int(count)
        self.step += 1
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def _identity(self) -> dict:
        return {"seed": self.seed, "seq_len": self.sources[0].seq_len,
                "stride": self.sources[0].stride, "datasets": self.dataset_ids,
                "weights": [float(p) for p in self.probabilities]}

    def get_state(self) -> dict:
        return {"version": STATE_VERSION, "kind": "mixture", "step": self.step,
                "positions": list(self.positions), **self._identity()}

    def set_state(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION or state.get("kind") != "mixture":
            raise UsageError(f"data iterator state {state!r}: not a data.mixture state of this "
                             "lmjax version; restore with the saved data settings or start a new "
                             "workdir")
        for key, value in self._identity().items():
            if state.get(key) != value:
                raise UsageError(f"data iterator state: saved with {key}={state.get(key)!r}, "
                                 f"but this run has {key}={value!r}; the same data order cannot "
                                 "continue, so restore with the saved setting or use a new workdir")
        self.step, self.positions = int(state["step"]), [int(p) for p in state["positions"]]

    @property
    def epoch(self) -> float:
        return max(p / len(w) for p, w in zip(self.positions, self.sources))

    def close(self) -> None:
        pass
