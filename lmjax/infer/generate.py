"""Sampling with a KV cache: one jitted prefill over a batch of prompts, one jitted step per token.

Prompts of different lengths share a batch: they are right-padded to a bucketed length, each row
keeps its own position, and the cache slot of a token is its position (see
lmjax.model.attention.cached_attention); a local (sliding-window) layer keeps only its window, in
a ring buffer. Shapes are static per (batch, prompt bucket, cache
length), so a run compiles the prefill once and the decode step once.

The cache holds min(model.max_seq_len, longest prompt + max_new_tokens) slots, rounded up. When a
row reaches model.max_seq_len, every row is re-prefilled from its last max_seq_len // 2 tokens and
generation continues, as the full-recompute sampler slides its window. A prompt longer than
model.max_seq_len is an error.
"""
import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from lmjax.parallel import mesh as mesh_lib
from lmjax.parallel import shardings as sharding
from lmjax.parallel.context import context
from lmjax.errors import UsageError
from lmjax.model.transformer import Transformer
from lmjax.train import xla_options

EOS_CHECK_EVERY = 8  # decode steps between host checks of "every row has stopped"


@dataclasses.dataclass(frozen=True)
class Sampling:
    """temperature 0 = greedy; top_k 0 = off; top_p 1 = off (nucleus sampling otherwise)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def check(self):
        if self.temperature < 0:
            raise UsageError(f"--temperature={self.temperature}: must be >= 0 (0 = greedy)")
        if self.top_k < 0:
            raise UsageError(f"--top_k={self.top_k}: must be >= 0 (0 = off)")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--top_p={self.top_p}: must lie in (0, 1] (1 = off)")


def filter_logits(logits_BxV, top_k: int, top_p: float):
    """Sets to -inf every logit outside the top-k and outside the nucleus of mass top_p."""
    if top_k > 0:
        kth_B = jax.lax.top_k(logits_BxV, min(top_k, logits_BxV.shape[-1]))[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth_B, -jnp.inf, logits_BxV)
    if top_p < 1.0:
        sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
        probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
        # Keep a token while the mass of the tokens strictly before it is below top_p.
        before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
        kept_B = jnp.sum(before_BxV < top_p, axis=-1, keepdims=True)
        threshold_B = jnp.take_along_axis(sorted_BxV, kept_B - 1, axis=-1)
        logits_BxV = jnp.where(logits_BxV < threshold_B, -jnp.inf, logits_BxV)
    return logits_BxV


def sample_logits(logits_BxV, key, sampling: Sampling):
    if sampling.temperature == 0:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    logits_BxV = filter_logits(logits_BxV / sampling.temperature, sampling.top_k, sampling.top_p)
    return jax.random.categorical(key, logits_BxV, axis=-1).astype(jnp.int32)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _bucket(n: int) -> int:
    """Prompt lengths compile once per power of two (at least 16)."""
    return max(16, 1 << (max(n, 1) - 1).bit_length())


class Generator:
    """Generates from `params` of the model described by cfg.model, on the mesh of cfg.mesh.

    The parameters must already live on that mesh (as load functions place them).
    """

    def __init__(self, cfg, params, mesh=None, compile_fast: bool = False):
        """compile_fast: for a few short generations (a run's closing sample), where the
        compiles take longer than the decoding."""
        self.cfg, self.params = cfg, params
        self.base_options = xla_options.COMPILE_FAST if compile_fast else None
        self.mesh = mesh if mesh is not None else mesh_lib.make_mesh(cfg)
        self.rules = sharding.rules(cfg)
        # Decoding never needs rematerialisation; the parameter tree is the same either way.
        model_cfg = cfg.model.copy_and_resolve_references()
        with model_cfg.unlocked():
            model_cfg.remat_policy = "none"
        self.model_cfg = model_cfg
        self.batch_sh = sharding.batch_sharding(self.mesh, self.rules)
        self.batch_shards = mesh_lib.batch_shards(self.mesh)
        self._compiled = {}

    def _context(self):
        return context(self.mesh, self.rules)

    def _functions(self, cache_len: int, sampling: Sampling):
        key = (cache_len, sampling)
        if key in self._compiled:
            return self._compiled[key]
        model = Transformer(self.model_cfg, decode_len=cache_len)

        def prefill(params, tokens_BxP, lengths_B, done_B, eos_E, rng):
            B, P = tokens_BxP.shape
            # Padding past a row's length gets position -1: ring-buffer caches of local layers
            # never store it (it would evict the row's own recent keys).
            steps_P = jnp.arange(P, dtype=jnp.int32)
            positions_BxP = jnp.where(steps_P[None, :] < lengths_B[:, None], steps_P[None, :], -1)
            logits_BxPxV, variables = model.apply({"params": params}, tokens_BxP, positions_BxP,
                                                  mutable=["cache"])
            last_BxV = jnp.take_along_axis(logits_BxPxV, (lengths_B - 1)[:, None, None],
                                           axis=1)[:, 0]
            return (variables["cache"],) + _next(last_BxV, lengths_B, done_B, eos_E, rng)

        def decode(params, cache, tokens_B, positions_B, done_B, eos_E, rng):
            logits_Bx1xV, variables = model.apply({"params": params, "cache": cache},
                                                  tokens_B[:, None], positions_B[:, None],
                                                  mutable=["cache"])
            return (variables["cache"],) + _next(logits_Bx1xV[:, 0], positions_B + 1, done_B,
                                                 eos_E, rng)

        def _next(logits_BxV, next_positions_B, done_B, eos_E, rng):
            tokens_B = sample_logits(logits_BxV, rng, sampling)
            done_B = done_B | jnp.any(tokens_B[:, None] == eos_E[None, :], axis=-1)
            return tokens_B, next_positions_B, done_B

        options = xla_options.compiler_options(self.cfg, self.base_options)
        fns = (jax.jit(prefill, compiler_options=options),
               jax.jit(decode, donate_argnums=1, compiler_options=options))
        self._compiled[key] = fns
        return fns

    def cache_len(self, longest_prompt: int, max_new_tokens: int) -> int:
        limit = self.cfg.model.max_seq_len
        return min(limit, _round_up(longest_prompt + max_new_tokens, 64))

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: Sampling = Sampling(), seed: int = 0,
                 eos_ids: Sequence[int] = (), complete=None) -> list[list[int]]:
        """New token ids for each prompt; a row ends before its first EOS id or at max_new_tokens.

        complete(new_ids) -> bool, when given, may end generation early: once it holds for every
        row not yet at EOS (checked every EOS_CHECK_EVERY steps, e.g. a stop string appeared).
        Rows keep their tokens past that point; the caller cuts them.
        """
        sampling.check()
        limit = self.cfg.model.max_seq_len
        if not prompts:
            return []
        for i, prompt in enumerate(prompts):
            if not len(prompt):
                raise UsageError(f"prompt {i} encodes to no tokens; give a non-empty prompt")
            if len(prompt) > limit:
                raise UsageError(f"prompt {i} is {len(prompt)} tokens, longer than "
                                 f"model.max_seq_len={limit}; shorten the prompt")
        if max_new_tokens <= 0:
            return [[] for _ in prompts]
        n = len(prompts)
        B = _round_up(n, self.batch_shards)
        # Padding rows repeat the first prompt and are dropped at the end.
        rows = [list(p) for p in prompts] + [list(prompts[0])] * (B - n)
        longest = max(len(r) for r in rows)
        cache_len = self.cache_len(longest, max_new_tokens)
        keep = max(1, limit // 2)  # the most recent tokens a slide re-prefills from
        # A run that will slide pads every prefill to one length: one compile, not two.
        prefill_len = max(longest, keep) if longest + max_new_tokens - 1 > cache_len else longest
        prefill, decode = self._functions(cache_len, sampling)
        eos = jnp.asarray(list(eos_ids) or [-1], jnp.int32)
        # Placed as the keys folded from it will be, so a re-prefill reuses the first's compile.
        base_key = jax.device_put(jax.random.key(seed), NamedSharding(self.mesh, PartitionSpec()))
        generated = [[] for _ in range(B)]
        steps = []  # device arrays (tokens_B, done_B) not yet copied to the host
        with self._context():
            cache, tokens, positions, done = self._prefill(prefill, rows, eos, base_key, cache_len,
                                                           prefill_len)
            steps.append((tokens, done))
            next_position = max(len(r) for r in rows)  # of the longest row, known on the host
            for step in range(1, max_new_tokens):
                if step % EOS_CHECK_EVERY == 0 and self._all_done(done, steps, generated, n,
                                                                  complete):
                    break
                if next_position >= cache_len:
                    # The context is full: slide by re-prefilling from the most recent tokens.
                    self._collect(steps, generated)
                    rows_now = [(r + g)[-keep:] for r, g in zip(rows, generated)]
                    cache, tokens, positions, done = self._prefill(
                        prefill, rows_now, eos, jax.random.fold_in(base_key, step), cache_len,
                        prefill_len, done)
                    next_position = max(len(r) for r in rows_now)
                else:
                    cache, tokens, positions, done = decode(
                        self.params, cache, tokens, positions, done, eos,
                        jax.random.fold_in(base_key, step))
                    next_position += 1
                steps.append((tokens, done))
            self._collect(steps, generated)
        return [_until_eos(g, eos_ids) for g in generated[:n]]

    def _prefill(self, prefill, rows, eos, rng, cache_len, min_len=1, done=None):
        B = len(rows)
        P = min(_bucket(max(min_len, *(len(r) for r in rows))), cache_len)
        tokens = np.zeros((B, P), np.int32)
        for i, r in enumerate(rows):
            tokens[i, :len(r)] = r
        lengths = np.asarray([len(r) for r in rows], np.int32)
        done = np.zeros((B,), bool) if done is None else np.asarray(jax.device_get(done))
        vector_sh = NamedSharding(self.mesh, PartitionSpec(*self.batch_sh.spec[:1]))
        return prefill(self.params, jax.device_put(tokens, self.batch_sh),
                       jax.device_put(lengths, vector_sh), jax.device_put(done, vector_sh), eos,
                       rng)

    def _all_done(self, done, steps, generated, n, complete) -> bool:
        if complete is None:
            return bool(jax.device_get(done).all())
        self._collect(steps, generated)
        at_eos = np.asarray(jax.device_get(done))
        return all(d or complete(g) for d, g in zip(at_eos[:n], generated[:n]))

    @staticmethod
    def _collect(steps, generated):
        """Moves pending step outputs to the host rows (tokens after a row stopped included)."""
        if not steps:
            return
        host = jax.device_get(steps)
        steps.clear()
        for tokens_B, _ in host:
            for row, token in zip(generated, tokens_B):
                row.append(int(token))


def _until_eos(tokens: list[int], eos_ids) -> list[int]:
    eos = set(eos_ids)
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[:i]
    return tokens


def prompt_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt, led by BOS when the tokenizer's models expect one."""
    ids = list(tokenizer.encode(text))
    if getattr(tokenizer, "add_bos", False) and tokenizer.bos_id >= 0:
        ids = [tokenizer.bos_id] + ids
    return ids


def eos_ids(tokenizer) -> list[int]:
    ids = list(getattr(tokenizer, "eos_ids", ()) or ())
    if not ids and tokenizer.eos_id >= 0:
        ids = [tokenizer.eos_id]
    return ids


def generate_text(generator: Generator, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                  sampling: Sampling = Sampling(), seed: int = 0) -> list[str]:
    """Each prompt followed by its continuation, as text."""
    encoded = []
    for i, prompt in enumerate(prompts):
        try:
            encoded.append(prompt_ids(tokenizer, prompt))
        except UsageError as e:  # text the tokenizer cannot encode
            raise UsageError(f"prompt {i}: {e}") from None
    new = generator.generate(encoded, max_new_tokens, sampling, seed, eos_ids(tokenizer))
    return [p + tokenizer.decode(n) for p, n in zip(prompts, new)]
