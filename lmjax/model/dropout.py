"""Dropout masks, by name in model.dropout_rng (DROPOUT_RNGS).

  threefry  jax.random.bernoulli on the module's key (flax's nn.Dropout), JAX's default PRNG.
  hash      a counter-based hash of the key and each element's global index: elementwise
            integer ops on iotas, which XLA fuses into the op that uses the mask.

Both are pure functions of the 'dropout' key, which flax folds with the module path (and
nn.scan splits per layer), so a mask depends only on (seed, step, layer, position), never on
the mesh. Why `hash`: on CPU, JAX lowers threefry to a rolled while loop per draw, which XLA
neither fuses nor compiles quickly (one per attention query block, per layer); the hash is a few
multiplies and shifts per element on every backend, partitions like any elementwise op, and is
recomputed for free under remat. Its bits come from the lowbias32 integer hash (C. Wellons,
"Prospecting for hash functions", 2018), applied to the seed and the leading axes' linear
index, then chained with the last two axes' indices: adequate for dropout, not for sampling.

A mask function is (key, shape, rate, starts=None) -> bool keep mask of `shape`. For attention
probabilities (..., queries, keys), starts = (first query, first key) of the block: threefry
folds the query start into the key (as it always has), and the hash adds both to the indices of
the last two axes, so that with `hash` the einsum and blockwise backends drop exactly the same
probabilities.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _lowbias32(x):
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _key_words(key):
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return jnp.asarray(data, jnp.uint32).reshape(-1)


def hash_bits(key, shape, starts=None):
    """uint32 bits of every element of `shape`, hashed from the key and the element's index
    (the last two axes' offset by `starts`)."""
    seed = jnp.uint32(0)
    for word in _key_words(key):  # a scalar: computed once, not per element
        seed = _lowbias32(seed ^ word)
    offsets = [0] * len(shape)
    if starts is not None:
        offsets[-2:] = starts
    index = [jax.lax.broadcasted_iota(jnp.uint32, shape, axis) + jnp.uint32(offset)
             for axis, offset in enumerate(offsets)]
    # The leading axes as one linear index (they are never offset), then the last two: three
    # rounds of the hash per element whatever the rank.
    lead = jnp.zeros(shape, jnp.uint32)
    for axis in range(len(shape) - 2):
        lead = lead * jnp.uint32(shape[axis]) + index[axis]
    h = _lowbias32(jnp.broadcast_to(seed, shape) ^ lead)
    for axis in range(max(0, len(shape) - 2), len(shape)):
        h = _lowbias32(h ^ index[axis])
    return h


def hash_keep(key, shape, rate, starts=None):
    # P(bits >= threshold) = 1 - rate, to 2^-32.
    threshold = np.uint32(min(round(rate * 2.0 ** 32), 2 ** 32 - 1))
    return hash_bits(key, shape, starts) >= threshold


def threefry_keep(key, shape, rate, starts=None):
    if starts is not None:
        key = jax.random.fold_in(key, starts[0])
    return jax.random.bernoulli(key, 1.0 - rate, shape)


DROPOUT_RNGS = {"threefry": threefry_keep, "hash": hash_keep}


class Dropout(nn.Module):
    """nn.Dropout with its mask from DROPOUT_RNGS[rng]. Named like flax's, so a layer's
    dropouts are Dropout_0, Dropout_1, ... whichever draws their masks."""
    rate: float
    rng: str

    @nn.compact
    def __call__(self, x, deterministic: bool):
        if deterministic or self.rate == 0:
            return x
        keep = DROPOUT_RNGS[self.rng](self.make_rng("dropout"), x.shape, self.rate)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


def dropout(x, rate: float, rng: str, deterministic: bool):
    """model.dropout on activations, called inside a module's compact __call__. threefry is
    flax's nn.Dropout itself, so its masks are what they always were."""
    if rng == "threefry":
        return nn.Dropout(rate)(x, deterministic=deterministic)
    return Dropout(rate, rng)(x, deterministic=deterministic)
