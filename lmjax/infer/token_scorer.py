"""Log-probabilities of given next tokens, jitted on the model's mesh, independent of batching.

A row's values must not depend on which rows share its batch or on the batch size (lm-eval
results would otherwise change with --batch_size). So each row is padded on the right to its own
length bucket (a power of two, at least 16, at most the model's context; causal attention keeps
the padding from changing the row), and the rows of a bucket go through one compiled program
over [shards, T], one row per batch shard per pass: every row is computed by the same executable
whatever its batch-mates, so its values are the same bit for bit. (A loop inside one program
would not do: XLA inlines a one-trip loop and fuses it differently, which changes rounding.)
A run compiles one program per bucket. Outputs are replicated, so every process reads every row.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from lmjax.parallel import mesh as mesh_lib
from lmjax.parallel import shardings
from lmjax.parallel.context import context


def length_bucket(n: int, limit: int) -> int:
    return min(limit, max(16, 1 << (max(n, 1) - 1).bit_length()))


class TokenScorer:
    """score(rows) -> per row (log p(target_t | inputs_<=t) for each t, target_t is the argmax)."""

    def __init__(self, cfg, model, params, mesh=None, batch_size: int = 16):
        self.mesh = mesh if mesh is not None else mesh_lib.make_mesh(cfg)
        self.rules = shardings.rules(cfg)
        self.params = params
        self.limit = cfg.model.max_seq_len
        self.shards = mesh_lib.batch_shards(self.mesh)
        self.batch_size = -(-batch_size // self.shards) * self.shards
        self.batch_sh = shardings.batch_sharding(self.mesh, self.rules)

        def score_pass(params, inputs_SxT, targets_SxT):
            logits_SxTxV = model.apply({"params": params}, inputs_SxT).astype(jnp.float32)
            logp_SxTxV = jax.nn.log_softmax(logits_SxTxV, axis=-1)
            target_logp_SxT = jnp.take_along_axis(logp_SxTxV, targets_SxT[..., None], axis=-1)
            greedy_SxT = jnp.argmax(logits_SxTxV, axis=-1) == targets_SxT
            return target_logp_SxT[..., 0], greedy_SxT

        self._score = jax.jit(score_pass, out_shardings=shardings.replicated(self.mesh))

    def _global(self, host):
        return jax.make_array_from_callback(host.shape, self.batch_sh, lambda index: host[index])

    def _score_bucket(self, rows, T):
        S = self.shards
        passes = -(-len(rows) // S)
        inputs = np.zeros((passes * S, T), np.int32)
        targets = np.zeros((passes * S, T), np.int32)
        for i, (row_inputs, row_targets) in enumerate(rows):
            inputs[i, :len(row_inputs)] = row_inputs
            targets[i, :len(row_targets)] = row_targets
        outputs = []
        with context(self.mesh, self.rules):
            for p in range(passes):  # dispatched asynchronously; read back once, below
                rows_of_pass = slice(p * S, (p + 1) * S)
                outputs.append(self._score(self.params, self._global(inputs[rows_of_pass]),
                                           self._global(targets[rows_of_pass])))
        logp = np.concatenate([np.asarray(lp) for lp, _ in outputs])
        greedy = np.concatenate([np.asarray(g) for _, g in outputs])
        return [(logp[i, :len(r[0])], greedy[i, :len(r[0])]) for i, r in enumerate(rows)]

    def score(self, rows: Sequence[tuple[Sequence[int], Sequence[int]]]):
        """rows: (inputs, targets) of equal lengths <= the model's context, at most batch_size."""
        assert 0 < len(rows) <= self.batch_size
        by_bucket: dict[int, list[int]] = {}
        for i, (inputs, _) in enumerate(rows):
            by_bucket.setdefault(length_bucket(len(inputs), self.limit), []).append(i)
        out = [None] * len(rows)
        for T, indices in by_bucket.items():
            for i, scored in zip(indices, self._score_bucket([rows[i] for i in indices], T)):
                out[i] = scored
        return out
