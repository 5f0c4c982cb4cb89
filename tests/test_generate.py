"""KV-cache generation against full recomputation (lmjax.sample), batching, sampling filters."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.errors import UsageError
from lmjax.infer.generate import Generator, Sampling, filter_logits
from lmjax.model import build_model
from tests.helpers import randomize, run_script, tiny_config, unboxed

MAX_SEQ = 48
VARIANTS = {
    "gpt2-like": {},
    "llama-like-gqa-scanned": {"model.positions": "rope", "model.norm": "rmsnorm",
                               "model.mlp": "swiglu", "model.use_bias": False,
                               "model.num_kv_heads": 2, "model.tie_embeddings": False,
                               "model.scan_layers": True},
}


def setup(variant, seed=0):
    cfg = tiny_config({"model.max_seq_len": MAX_SEQ, **VARIANTS[variant]})
    model = build_model(cfg.model)
    params = unboxed(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
    return cfg, model, randomize(params, seed)


PROMPTS = [[3, 1, 4, 1, 5], [9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3], [8]]


@pytest.fixture(scope="module")
def gpt2_like():
    cfg, model, params = setup("gpt2-like")
    return model, params, Generator(cfg, params)


def full_recompute_greedy(model, params, prompt, new):
    """Reference: a full forward over the whole sequence per new token, argmax at its end."""
    forward = jax.jit(lambda window: model.apply({"params": params}, window))
    ids = list(prompt)
    for _ in range(new):
        window = np.zeros((1, MAX_SEQ), np.int32)
        window[0, :len(ids)] = ids
        ids.append(int(np.argmax(np.asarray(forward(window))[0, len(ids) - 1])))
    return ids[len(prompt):]


@pytest.mark.parametrize("variant", [  # the scanned stack compiles for long; slow-marked
    pytest.param(v, marks=pytest.mark.slow) if "scanned" in v else v for v in VARIANTS])
def test_greedy_with_cache_equals_full_recomputation(variant, gpt2_like):
    if variant == "gpt2-like":
        model, params, generator = gpt2_like
    else:
        cfg, model, params = setup(variant)
        generator = Generator(cfg, params)
    new = 20
    batched = generator.generate(PROMPTS, new)
    for prompt, got in zip(PROMPTS, batched):
        assert got == full_recompute_greedy(model, params, prompt, new)
        assert generator.generate([prompt], new) == [got]  # alone == in a batch


def test_top_k_one_is_greedy_and_eos_stops_a_row(gpt2_like):
    generator = gpt2_like[2]
    greedy = generator.generate(PROMPTS, 12)
    assert generator.generate(PROMPTS, 12, Sampling(temperature=1.5, top_k=1), seed=3) == greedy
    eos = greedy[1][4]
    stopped = generator.generate(PROMPTS, 12, eos_ids=[eos])
    for row, full in zip(stopped, greedy):
        assert row == (full[:full.index(eos)] if eos in full else full)


def test_sampling_is_seeded(gpt2_like):
    generator = gpt2_like[2]
    a = generator.generate(PROMPTS, 16, Sampling(temperature=1.0, top_k=5), seed=7)
    assert a == generator.generate(PROMPTS, 16, Sampling(temperature=1.0, top_k=5), seed=7)
    assert a != generator.generate(PROMPTS, 16, Sampling(temperature=1.0, top_k=5), seed=8)


def test_filter_logits_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 50)).astype(np.float32)
    for top_k, top_p in ((5, 1.0), (0, 0.5), (10, 0.3), (0, 0.999)):
        got = np.isfinite(np.asarray(filter_logits(jnp.asarray(logits), top_k, top_p)))
        for row in range(4):
            kept = np.ones(50, bool)
            if top_k:
                kept &= logits[row] >= np.sort(logits[row])[-top_k]
            order = np.argsort(-np.where(kept, logits[row], -np.inf))
            probs = np.exp(logits[row][order] - logits[row].max()) * kept[order]
            probs /= probs.sum()
            # The nucleus: the fewest top tokens whose mass reaches top_p.
            n = int(np.searchsorted(np.cumsum(probs), top_p) + 1) if top_p < 1 else kept.sum()
            expected = np.zeros(50, bool)
            expected[order[:n]] = True
            np.testing.assert_array_equal(got[row], expected & kept, err_msg=(top_k, top_p))


def test_context_overflow_slides_and_long_prompts_are_refused(gpt2_like):
    generator = gpt2_like[2]
    out = generator.generate([[1, 2, 3]], 2 * MAX_SEQ)
    assert len(out[0]) == 2 * MAX_SEQ
    # Until the context fills up, sliding changes nothing.
    assert out[0][:MAX_SEQ - 3] == generator.generate([[1, 2, 3]], MAX_SEQ - 3)[0]
    with pytest.raises(UsageError, match="longer than model.max_seq_len=48"):
        generator.generate([[1] * (MAX_SEQ + 1)], 4)


def test_a_sliding_generation_compiles_one_prefill(gpt2_like):
    # The first prefill is padded to the length every slide re-prefills: one compile of it
    # (an end-of-run sample on a short context otherwise compiled two).
    _, params, shared = gpt2_like
    generator = Generator(shared.cfg, params)
    assert generator.generate([[1, 2, 3]], 2 * MAX_SEQ) == shared.generate([[1, 2, 3]],
                                                                           2 * MAX_SEQ)
    (prefill, decode), = generator._compiled.values()
    assert prefill._cache_size() == 1 and decode._cache_size() == 1


def test_compiling_for_compile_time_samples_the_same_tokens(gpt2_like):
    _, params, shared = gpt2_like
    sampling = Sampling(temperature=0.8, top_k=20)
    fast = Generator(shared.cfg, params, compile_fast=True)
    assert fast.generate(PROMPTS, 20, sampling, seed=3) == shared.generate(PROMPTS, 20,
                                                                           sampling, seed=3)


MESH_SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
from lmjax.parallel import mesh as mesh_lib
from lmjax.parallel import shardings as sharding
from lmjax.train import state as state_lib
from lmjax.infer.generate import Generator
from lmjax.model import build_model
from tests.helpers import randomize, tiny_config, unboxed
from tests.test_generate import PROMPTS, VARIANTS
over = {"model.max_seq_len": 48, **VARIANTS["llama-like-gqa-scanned"]}
cfg = tiny_config(over)
model = build_model(cfg.model)
params = randomize(unboxed(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]))
single = Generator(cfg, jax.device_put(params, jax.devices()[0]),
                   mesh=mesh_lib.make_mesh(cfg, jax.devices()[:1])).generate(PROMPTS, 12)
cfg = tiny_config({**over, "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
mesh = mesh_lib.make_mesh(cfg)
with jax.set_mesh(mesh):
    sh = sharding.logical_to_sharding(state_lib.abstract_params(model, cfg), mesh,
                                      sharding.rules(cfg))
placed = jax.device_put(params, sh)
assert any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
           for x in jax.tree.leaves(placed))
assert Generator(cfg, placed).generate(PROMPTS, 12) == single, "mesh result differs"
print("OK")
"""


@pytest.mark.slow
def test_generation_on_a_mesh_matches_one_device():
    result = run_script(MESH_SCRIPT, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
