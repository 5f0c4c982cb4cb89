"""Mixture-of-experts HF interop against transformers (torch CPU, float32), built offline.

Reference models come from configs with perturbed random weights (so routing is not uniform and
no gain is trivially 1). lmjax logits must equal transformers' to 1e-4, greedy generation must
agree for 32 tokens, and an exported directory must load in transformers with the same logits.
"""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="HF parity tests need torch (pip install -e .[test])")
transformers = pytest.importorskip("transformers", reason="HF parity tests need transformers")

from lmjax.errors import UsageError  # noqa: E402
from lmjax.hf import load_hf, save_hf  # noqa: E402
from tests.hf_parity import (  # noqa: E402
    hf_logits, lmjax_logits, perturbed_hf_model, random_tokens)
from lmjax.infer.generate import Generator  # noqa: E402

VOCAB, SEQ, NEW = 128, 48, 32


def mixtral_config(**extra):
    return transformers.MixtralConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=SEQ + NEW,
        num_local_experts=4, num_experts_per_tok=2, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **extra)


def qwen3_moe_config(**extra):
    # head_dim 16 with d_model 32 and 4 heads: decoupled, as Qwen3's; dense MLPs every other
    # layer (decoder_sparse_step 2) with their own width; top-k weights not renormalised.
    return transformers.Qwen3MoeConfig(
        hidden_size=32, intermediate_size=40, moe_intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=VOCAB,
        max_position_embeddings=SEQ + NEW, num_experts=4, num_experts_per_tok=2,
        norm_topk_prob=False, decoder_sparse_step=2, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **extra)


CONFIGS = {"mixtral": mixtral_config, "qwen3_moe": qwen3_moe_config}


def build(directory, kind, seed=0, **extra):
    return perturbed_hf_model(CONFIGS[kind](**extra), directory, seed)


def tokens(batch=2, length=SEQ, seed=1):
    return random_tokens(VOCAB, batch, length, seed)


# Qwen3-MoE runs the same import/export code as Mixtral (plus QK-norm and dense layers, each
# tested in their own files): slow-marked to keep the default suite short.
@pytest.mark.parametrize("kind", ["mixtral",
                                  pytest.param("qwen3_moe", marks=pytest.mark.slow)])
def test_moe_import_generate_export_parity(tmp_path, kind):
    ref = build(tmp_path / "hf", kind)
    x = tokens()
    expected = hf_logits(ref, x)
    run = load_hf(str(tmp_path / "hf"), with_tokenizer=False)
    m = run.cfg.model
    assert m.mlp == "moe" and m.moe.num_experts == 4 and m.moe.top_k == 2
    assert (m.qk_norm, m.moe.every, m.moe.renormalize) == (
        (True, 2, False) if kind == "qwen3_moe" else (False, 1, True))
    np.testing.assert_allclose(lmjax_logits(run, x), expected, atol=1e-4, rtol=0)

    prompt = x[0, :8]
    with torch.no_grad():
        hf_out = ref.generate(torch.as_tensor(prompt[None]), max_new_tokens=NEW, do_sample=False,
                              min_new_tokens=NEW, pad_token_id=0)[0, 8:].tolist()
    assert Generator(run.cfg, run.params).generate([prompt.tolist()], NEW)[0] == hf_out

    save_hf(run.cfg, run.params, str(tmp_path / "out"), log=lambda _: None)
    exported = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    np.testing.assert_allclose(hf_logits(exported, x), expected, atol=1e-4, rtol=0)
    if m.moe.every == 1:  # experts stacked under a scan too
        again = load_hf(str(tmp_path / "out"), with_tokenizer=False,
                        overrides={"model.scan_layers": True})
        np.testing.assert_allclose(lmjax_logits(again, x), expected, atol=1e-4, rtol=0)


def test_unsupported_router_variants_are_refused_by_name(tmp_path):
    build(tmp_path / "hf", "mixtral")
    path = tmp_path / "hf" / "config.json"
    hf = json.loads(path.read_text())
    path.write_text(json.dumps({**hf, "router_jitter_noise": 0.1}))
    with pytest.raises(UsageError, match="router_jitter_noise=0.1 is not supported"):
        load_hf(str(tmp_path / "hf"), with_tokenizer=False)


def test_export_refuses_moe_variants_transformers_cannot_load(tmp_path):
    from tests.helpers import tiny_config
    cfg = tiny_config({"model.positions": "rope", "model.norm": "rmsnorm", "model.mlp": "moe",
                       "model.use_bias": False, "model.moe.shared_d_ff": 16})
    with pytest.raises(UsageError, match="model.moe.shared_d_ff=16: no Hugging Face family"):
        save_hf(cfg, {}, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
