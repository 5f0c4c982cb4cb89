"""Sampling by full recomputation: one compiled forward over a fixed-size window per token."""
import jax
import jax.numpy as jnp
import numpy as np


def sample_tokens(model, params, prompt_ids, max_new_tokens: int, context: int,
                  temperature: float = 1.0, top_k: int = 0, seed: int = 0) -> list[int]:
    """Appends max_new_tokens sampled ids to prompt_ids (temperature 0 = greedy)."""
    if not prompt_ids:
        raise ValueError("the prompt encodes to no tokens; give a non-empty prompt")

    @jax.jit
    def next_token(window_1xC, length, key):
        logits = model.apply({"params": params}, window_1xC)[0, length - 1]
        if top_k > 0:
            kth = jax.lax.top_k(logits, top_k)[0][-1]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        if temperature <= 0:
            return jnp.argmax(logits)
        return jax.random.categorical(key, logits / temperature)

    ids = list(prompt_ids)
    key = jax.random.key(seed)
    for i in range(max_new_tokens):
        recent = ids[-context:]
        window = np.zeros((1, context), np.int32)
        window[0, :len(recent)] = recent
        token = next_token(window, len(recent), jax.random.fold_in(key, i))
        ids.append(int(token))
    return ids


def sample_text(model, params, tokenizer, prompt: str, max_new_tokens: int, context: int,
                temperature: float = 0.8, top_k: int = 0, seed: int = 0) -> str:
    ids = sample_tokens(model, params, tokenizer.encode(prompt), max_new_tokens, context,
                        temperature, top_k, seed)
    return tokenizer.decode(ids)
