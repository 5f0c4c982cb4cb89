"""Hugging Face import/export against transformers itself (torch CPU, float32).

Reference models are built from configs offline and their weights perturbed with noise, so zero
biases and unit norm gains cannot hide a mapping bug. lmjax logits must equal transformers' to
1e-4; an exported directory must load in transformers and give the same logits; import ->
export -> import must reproduce every parameter bit for bit.
"""
import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="HF parity tests need torch (pip install -e .[test])")
transformers = pytest.importorskip("transformers", reason="HF parity tests need transformers")

from lmjax.errors import UsageError  # noqa: E402
from lmjax.hf import load_hf, save_hf  # noqa: E402
from tests.hf_parity import (  # noqa: E402
    hf_logits, lmjax_logits, perturbed_hf_model, random_tokens)

VOCAB, SEQ = 256, 64


def hf_config(kind: str, tie: bool, vocab_size=VOCAB, **extra):
    if kind == "gpt2":
        return transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=SEQ,
                                       vocab_size=vocab_size, tie_word_embeddings=tie,
                                       bos_token_id=1, eos_token_id=2, **extra)
    extra.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": 5000.0})
    return transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2,
                                    vocab_size=vocab_size, max_position_embeddings=SEQ,
                                    rms_norm_eps=1e-5, tie_word_embeddings=tie, **extra)


def build_hf_model(directory, kind="llama", tie=False, seed=0, **extra):
    """A transformers model with perturbed weights, saved to `directory`; returns the model."""
    return perturbed_hf_model(hf_config(kind, tie, **extra), directory, seed)


def tokens(batch=2, length=SEQ, seed=1):
    return random_tokens(VOCAB, batch, length, seed)


CASES = [("gpt2", True), ("gpt2", False), ("llama", False), ("llama", True)]


@pytest.mark.parametrize("kind,tie", CASES, ids=[f"{k}-{'tied' if t else 'untied'}"
                                                 for k, t in CASES])
def test_import_export_parity(tmp_path, kind, tie):
    ref = build_hf_model(tmp_path / "hf", kind, tie)
    x = tokens()
    expected = hf_logits(ref, x)
    run = load_hf(str(tmp_path / "hf"))
    assert run.cfg.model.tie_embeddings == tie
    if kind == "llama":
        assert run.cfg.model.num_kv_heads == 2 and run.cfg.model.rope_theta == 5000.0
    np.testing.assert_allclose(lmjax_logits(run, x), expected, atol=1e-4, rtol=0)

    save_hf(run.cfg, run.params, str(tmp_path / "out"), log=lambda _: None)
    exported = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    np.testing.assert_allclose(hf_logits(exported, x), expected, atol=1e-4, rtol=0)

    again = load_hf(str(tmp_path / "out"))
    flat_a = jax.tree_util.tree_leaves_with_path(run.params)
    flat_b = jax.tree_util.tree_leaves_with_path(again.params)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    for (path, a), (_, b) in zip(flat_a, flat_b):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))


def test_llama_partial_biases_and_scanned_layers(tmp_path):
    """attention_bias without mlp_bias (zero MLP biases in lmjax); scan_layers stacks per layer."""
    ref = build_hf_model(tmp_path / "hf", "llama", False, seed=3, attention_bias=True)
    x = tokens(seed=4)
    expected = hf_logits(ref, x)
    run = load_hf(str(tmp_path / "hf"), overrides={"model.scan_layers": True})
    assert run.cfg.model.use_bias and "layers" in run.params
    np.testing.assert_allclose(lmjax_logits(run, x), expected, atol=1e-4, rtol=0)
    # Exported with every bias (the MLP ones zero), and sharded over several files.
    save_hf(run.cfg, run.params, str(tmp_path / "out"), max_shard_bytes=100_000,
            log=lambda _: None)
    assert os.path.isfile(tmp_path / "out" / "model.safetensors.index.json")
    exported = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    np.testing.assert_allclose(hf_logits(exported, x), expected, atol=1e-4, rtol=0)
    again = load_hf(str(tmp_path / "out"))  # unrolled layers from the sharded files
    np.testing.assert_allclose(lmjax_logits(again, x), expected, atol=1e-4, rtol=0)


def _safetensors_names(directory):
    from safetensors import safe_open
    with safe_open(os.path.join(directory, "model.safetensors"), "np") as f:
        return list(f.keys())


def _rewrite(directory, drop=None, reshape=None):
    from safetensors.numpy import load_file, save_file
    path = os.path.join(directory, "model.safetensors")
    tensors = load_file(path)
    if drop:
        del tensors[drop]
    if reshape:
        tensors[reshape] = tensors[reshape][..., :-1]
    save_file(tensors, path, metadata={"format": "pt"})


def test_bad_directories_name_the_problem(tmp_path):
    with pytest.raises(UsageError, match="no config.json"):
        load_hf(str(tmp_path))
    build_hf_model(tmp_path / "hf", "llama")
    names = _safetensors_names(tmp_path / "hf")
    victim = next(n for n in names if "layers.1.mlp.up_proj" in n)
    _rewrite(tmp_path / "hf", reshape=victim)
    with pytest.raises(UsageError, match=f"'{victim}' has shape"):
        load_hf(str(tmp_path / "hf"))
    _rewrite(tmp_path / "hf", drop=victim)
    with pytest.raises(UsageError, match=f"'{victim}' missing"):
        load_hf(str(tmp_path / "hf"))
    os.remove(tmp_path / "hf" / "model.safetensors")
    with pytest.raises(UsageError, match="no model.safetensors"):
        load_hf(str(tmp_path / "hf"))
    cfg_path = tmp_path / "hf" / "config.json"
    hf = json.loads(cfg_path.read_text())
    for change, message in (({"model_type": "bert"}, "model_type='bert' is not supported"),
                            ({"rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e4,
                                                  "factor": 2.0}},
                             "rope_type='dynamic' is not supported"),
                            ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported")):
        cfg_path.write_text(json.dumps({**hf, **change}))
        with pytest.raises(UsageError, match=message):
            load_hf(str(tmp_path / "hf"))


def test_export_refuses_what_transformers_cannot_express(tmp_path):
    from tests.helpers import tiny_config
    cfg = tiny_config({"model.positions": "rope"})  # rope + layernorm + gelu: no HF family
    with pytest.raises(UsageError, match="no Hugging Face family"):
        save_hf(cfg, {}, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")
