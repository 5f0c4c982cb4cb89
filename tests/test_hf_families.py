"""Llama 3, Mistral, Qwen 2, Qwen 3, Gemma 2 and Gemma 3 against transformers (torch CPU, float32).

Each reference model is built offline from a tiny config of its family, with every weight
perturbed, and sequences run past the sliding window. lmjax must give transformers' logits
within 1e-4, greedy generation through lmjax's KV cache (ring buffers for local layers) must equal
transformers' generate for 32 tokens across the window boundary, an export must load in
transformers with the same logits, and import -> export -> import must be exact.
"""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="HF parity tests need torch (pip install -e .[test])")
transformers = pytest.importorskip("transformers", reason="HF parity tests need transformers")

from lmjax.errors import UsageError  # noqa: E402
from lmjax.hf import load_hf, save_hf  # noqa: E402
from tests.hf_parity import (  # noqa: E402
    hf_logits, lmjax_logits, perturbed_hf_model, random_tokens)
from lmjax.infer.generate import Generator  # noqa: E402

VOCAB, SEQ, WINDOW = 128, 40, 16
BASE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=128,
            rms_norm_eps=1e-6, bos_token_id=None, eos_token_id=None, pad_token_id=None)
FAMILIES = {
    "llama3": ("LlamaConfig", dict(rope_parameters={
        "rope_type": "llama3", "rope_theta": 500.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
    "mistral": ("MistralConfig", dict(sliding_window=WINDOW, rope_parameters={
        "rope_type": "default", "rope_theta": 1000.0})),
    "qwen2": ("Qwen2Config", dict(use_sliding_window=True, sliding_window=WINDOW,
                                  max_window_layers=1, tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", dict(head_dim=32, rope_parameters={
        "rope_type": "linear", "rope_theta": 1000.0, "factor": 2.0})),
    "gemma2": ("Gemma2Config", dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=WINDOW,
                                    attn_logit_softcapping=5.0, final_logit_softcapping=10.0)),
    "gemma3": ("Gemma3TextConfig", dict(
        num_hidden_layers=3, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention",
                                            "sliding_attention"],
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0,
                                            "rope_theta": 10000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}})),
}
FAST = ("llama3", "gemma3")  # the others run the same code paths; slow-marked for CI time


def family_params(names, fast=FAST):
    return [pytest.param(n, marks=() if n in fast else pytest.mark.slow) for n in names]


def build_hf_model(directory, family, seed=0):
    name, extra = FAMILIES[family]
    return perturbed_hf_model(getattr(transformers, name)(**{**BASE, **extra}), directory, seed)


def tokens(batch=2, length=SEQ, seed=1):
    return random_tokens(VOCAB, batch, length, seed)


@pytest.mark.parametrize("family", family_params(FAMILIES))
def test_family_parity_export_and_round_trip(tmp_path, family):
    ref = build_hf_model(tmp_path / "hf", family)
    x = tokens()
    expected = hf_logits(ref, x)
    run = load_hf(str(tmp_path / "hf"), with_tokenizer=False)
    m = run.cfg.model
    if family in ("mistral", "qwen2", "gemma2", "gemma3"):
        assert m.sliding_window == WINDOW < SEQ
    np.testing.assert_allclose(lmjax_logits(run, x), expected, atol=1e-4, rtol=0)

    save_hf(run.cfg, run.params, str(tmp_path / "out"), log=lambda _: None)
    exported = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    assert type(exported) is type(ref)
    np.testing.assert_allclose(hf_logits(exported, x), expected, atol=1e-4, rtol=0)

    again = load_hf(str(tmp_path / "out"), with_tokenizer=False)
    assert {k: again.cfg.model[k] for k in m} == {k: m[k] for k in m}
    flat_a = jax.tree_util.tree_leaves_with_path(run.params)
    flat_b = jax.tree_util.tree_leaves_with_path(again.params)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    for (path, a), (_, b) in zip(flat_a, flat_b):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))


@pytest.mark.parametrize("family", family_params(FAMILIES, fast=("gemma3",)))
def test_greedy_generation_across_the_window_equals_transformers(tmp_path, family):
    ref = build_hf_model(tmp_path / "hf", family, seed=5)
    prompts = tokens(batch=2, length=8, seed=6)
    with torch.no_grad():
        out = ref.generate(torch.as_tensor(prompts), max_new_tokens=32, min_new_tokens=32,
                           do_sample=False, pad_token_id=0)
    expected = out[:, 8:].numpy().tolist()
    run = load_hf(str(tmp_path / "hf"), with_tokenizer=False)
    got = Generator(run.cfg, run.params).generate(prompts.tolist(), 32)
    assert 8 + 32 > 2 * WINDOW  # the window slid past the prompt
    assert got == expected


@pytest.mark.slow
def test_scanned_mixed_layers_generate_as_unrolled(tmp_path):
    """Scanned Gemma 3 layers keep full-length caches with the window as a mask; unrolled local
    layers keep ring buffers: the same tokens."""
    build_hf_model(tmp_path / "hf", "gemma3", seed=5)
    prompts = tokens(batch=2, length=8, seed=6).tolist()
    unrolled = load_hf(str(tmp_path / "hf"), with_tokenizer=False)
    scanned = load_hf(str(tmp_path / "hf"), overrides={"model.scan_layers": True},
                      with_tokenizer=False)
    assert "layers" in scanned.params
    assert (Generator(scanned.cfg, scanned.params).generate(prompts, 32)
            == Generator(unrolled.cfg, unrolled.params).generate(prompts, 32))


@pytest.mark.parametrize("change,message", [
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}},
     "rope_type='yarn' is not supported"),
    ({"layer_types": ["chunked_attention", "full_attention"]}, "layer_types="),
    ({"hidden_activation": "gelu"}, "hidden_activation='gelu' is not supported"),
])
def test_unsupported_family_features_are_refused_by_name(tmp_path, change, message):
    import json
    build_hf_model(tmp_path / "hf", "gemma2")
    path = tmp_path / "hf" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(UsageError, match=message):
        load_hf(str(tmp_path / "hf"), with_tokenizer=False)
