"""Hugging Face config.json <-> lmjax model config, for GPT-2 and the LLaMA family.

Every HF feature lmjax cannot compute exactly is refused by name, so an imported model either
gives the same logits as transformers or does not load.
"""
from lmjax import config as config_lib
from lmjax.errors import UsageError

GPT2, LLAMA = "gpt2", "llama"
LLAMA_TYPES = ("llama", "mistral")
GPT2_ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu_fast": "gelu",
                    "gelu": "gelu_exact"}
SUPPORTED = "gpt2 (GPT2LMHeadModel), llama / mistral (LlamaForCausalLM, MistralForCausalLM)"


def family_of(hf: dict, where: str) -> str:
    model_type = hf.get("model_type")
    if model_type == "gpt2":
        family = GPT2
    elif model_type in LLAMA_TYPES:
        family = LLAMA
    else:
        raise UsageError(f"{where}: model_type={model_type!r} is not supported; lmjax imports "
                         f"{SUPPORTED}")
    archs = hf.get("architectures") or []
    causal = [a for a in archs if a.endswith("LMHeadModel") or a.endswith("ForCausalLM")
              or a in ("GPT2Model", "LlamaModel", "MistralModel")]
    if archs and not causal:
        raise UsageError(f"{where}: architectures={archs} is not a causal LM; lmjax imports "
                         f"{SUPPORTED}")
    return family


def _unsupported(where, field, value, why):
    raise UsageError(f"{where}: {field}={value!r} is not supported ({why})")


def rope_theta_of(hf: dict, where: str) -> float:
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    for name, section in (("rope_parameters", params), ("rope_scaling", scaling)):
        kind = section.get("rope_type", section.get("type", "default"))
        if kind != "default":
            _unsupported(where, f"{name}.rope_type", kind,
                         "lmjax implements plain RoPE only; no scaled or extended RoPE")
        factor = section.get("partial_rotary_factor", 1.0)
        if factor != 1.0:
            _unsupported(where, f"{name}.partial_rotary_factor", factor, "lmjax rotates the "
                         "whole head")
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        _unsupported(where, "partial_rotary_factor", hf["partial_rotary_factor"],
                     "lmjax rotates the whole head")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def to_lmjax(hf: dict, where: str):
    """(family, full lmjax ConfigDict) for an HF config.json dict."""
    family = family_of(hf, where)
    cfg = config_lib.base_config()
    m = cfg.model
    if family == GPT2:
        for field, bad, why in (("scale_attn_by_inverse_layer_idx", True, "scales by layer"),
                                ("add_cross_attention", True, "has cross-attention"),
                                ("scale_attn_weights", False, "unscaled attention scores")):
            if hf.get(field, not bad) == bad:
                _unsupported(where, field, bad, f"lmjax has no variant that {why}")
        act = hf.get("activation_function", "gelu_new")
        if act not in GPT2_ACTIVATIONS:
            _unsupported(where, "activation_function", act,
                         f"use one of {', '.join(GPT2_ACTIVATIONS)}")
        d = hf["n_embd"]
        fields = dict(num_layers=hf["n_layer"], d_model=d, num_heads=hf["n_head"], num_kv_heads=0,
                      head_dim=0, d_ff=hf.get("n_inner") or 4 * d, vocab_size=hf["vocab_size"],
                      max_seq_len=hf["n_positions"], positions="learned", norm="layernorm",
                      norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
                      mlp=GPT2_ACTIVATIONS[act], use_bias=True,
                      tie_embeddings=bool(hf.get("tie_word_embeddings", True)))
    else:
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            _unsupported(where, "hidden_act", act, "lmjax's SwiGLU uses silu")
        window = hf.get("sliding_window")
        if window is not None and window < hf.get("max_position_embeddings", 0):
            _unsupported(where, "sliding_window", window, "lmjax attends to the whole context; "
                         "set it to null if the model was trained without a window")
        heads = hf["num_attention_heads"]
        d = hf["hidden_size"]
        head_dim = hf.get("head_dim") or d // heads
        fields = dict(num_layers=hf["num_hidden_layers"], d_model=d, num_heads=heads,
                      num_kv_heads=hf.get("num_key_value_heads") or heads,
                      head_dim=0 if head_dim * heads == d else head_dim,
                      d_ff=hf["intermediate_size"], vocab_size=hf["vocab_size"],
                      max_seq_len=hf.get("max_position_embeddings", 2048), positions="rope",
                      rope_theta=rope_theta_of(hf, where), norm="rmsnorm",
                      norm_eps=float(hf.get("rms_norm_eps", 1e-6)), mlp="swiglu",
                      # lmjax has one bias flag; a projection without an HF bias gets zeros.
                      use_bias=bool(hf.get("attention_bias") or hf.get("mlp_bias")),
                      tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
    for key, value in fields.items():
        m[key] = value
    cfg.train.seq_len = min(cfg.train.seq_len, m.max_seq_len)
    return family, cfg


def family_for_export(m) -> str:
    """Which HF family expresses an lmjax model config exactly, or a UsageError naming why none."""
    head_dim = m.head_dim or m.d_model // m.num_heads
    if m.positions == "learned" and m.norm == "layernorm" and m.mlp in ("gelu", "gelu_exact"):
        if (m.num_kv_heads or m.num_heads) != m.num_heads:
            raise UsageError(f"model.num_kv_heads={m.num_kv_heads}: GPT-2 has no grouped-query "
                             "attention; export needs num_kv_heads=0")
        if head_dim * m.num_heads != m.d_model:
            raise UsageError(f"model.head_dim={m.head_dim}: GPT-2 needs head_dim = d_model / "
                             "num_heads")
        return GPT2
    if m.positions == "rope" and m.norm == "rmsnorm" and m.mlp == "swiglu":
        return LLAMA
    raise UsageError(f"model.positions={m.positions!r}, model.norm={m.norm!r}, model.mlp="
                     f"{m.mlp!r}: neither GPT-2 (learned, layernorm, gelu) nor LLaMA (rope, "
                     "rmsnorm, swiglu); transformers cannot load this combination")


def to_hf(m, family: str, dtype: str, special_ids: dict) -> dict:
    """config.json for an lmjax model section (special_ids: bos_token_id/eos_token_id/...)."""
    head_dim = m.head_dim or m.d_model // m.num_heads
    if family == GPT2:
        hf = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
              "vocab_size": m.vocab_size, "n_positions": m.max_seq_len, "n_embd": m.d_model,
              "n_layer": m.num_layers, "n_head": m.num_heads, "n_inner": m.d_ff,
              "activation_function": "gelu_new" if m.mlp == "gelu" else "gelu",
              "layer_norm_epsilon": m.norm_eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
              "attn_pdrop": 0.0, "scale_attn_weights": True,
              "tie_word_embeddings": bool(m.tie_embeddings)}
    else:
        hf = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "vocab_size": m.vocab_size, "hidden_size": m.d_model,
              "intermediate_size": m.d_ff, "num_hidden_layers": m.num_layers,
              "num_attention_heads": m.num_heads,
              "num_key_value_heads": m.num_kv_heads or m.num_heads, "head_dim": head_dim,
              "max_position_embeddings": m.max_seq_len, "hidden_act": "silu",
              "rms_norm_eps": m.norm_eps, "rope_theta": m.rope_theta,
              "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_theta},
              "attention_bias": bool(m.use_bias), "mlp_bias": bool(m.use_bias),
              "attention_dropout": 0.0, "tie_word_embeddings": bool(m.tie_embeddings)}
    hf["torch_dtype"] = dtype
    hf.update({k: v for k, v in special_ids.items() if v is not None and v >= 0})
    return hf
