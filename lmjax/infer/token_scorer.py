"""Log-probabilities of given next tokens, batched and jitted on the model's mesh.

Rows of different lengths share a batch: each is right-padded to the batch's length bucket (a
power of two, at least 16, at most the model's context), and the batch is padded with empty rows
to a fixed size, so a run compiles once per length bucket. Causal attention keeps padding after a
row from changing the row's values. Outputs are replicated, so every process reads every row.
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
        shards = mesh_lib.batch_shards(self.mesh)
        self.batch_size = -(-batch_size // shards) * shards
        self.batch_sh = shardings.batch_sharding(self.mesh, self.rules)

        def score(params, inputs_BxT, targets_BxT):
            logits_BxTxV = model.apply({"params": params}, inputs_BxT).astype(jnp.float32)
            logp_BxTxV = jax.nn.log_softmax(logits_BxTxV, axis=-1)
            target_logp_BxT = jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)
            greedy_BxT = jnp.argmax(logits_BxTxV, axis=-1) == targets_BxT
            return target_logp_BxT[..., 0], greedy_BxT

        self._score = jax.jit(score, out_shardings=shardings.replicated(self.mesh))

    def _global(self, host):
        return jax.make_array_from_callback(host.shape, self.batch_sh, lambda index: host[index])

    def score(self, rows: Sequence[tuple[Sequence[int], Sequence[int]]]):
        """rows: (inputs, targets) of equal lengths <= the model's context, at most batch_size."""
        assert 0 < len(rows) <= self.batch_size
        T = length_bucket(max(len(inputs) for inputs, _ in rows), self.limit)
        inputs = np.zeros((self.batch_size, T), np.int32)
        targets = np.zeros((self.batch_size, T), np.int32)
        for i, (row_inputs, row_targets) in enumerate(rows):
            inputs[i, :len(row_inputs)] = row_inputs
            targets[i, :len(row_targets)] = row_targets
        with context(self.mesh, self.rules):
            logp, greedy = self._score(self.params, self._global(inputs), self._global(targets))
        logp, greedy = np.asarray(logp), np.asarray(greedy)
        return [(logp[i, :len(r[0])], greedy[i, :len(r[0])]) for i, r in enumerate(rows)]
