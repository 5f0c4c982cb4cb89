"""Hugging Face config.json <-> lmjax model config, for GPT-2 and the decoder families
(FAMILIES: llama, mistral, qwen2, qwen3, gemma2, gemma3_text, and the mixtures of experts
mixtral and qwen3_moe), keyed by HF model_type.

Every HF feature lmjax cannot compute exactly is refused by name, so an imported model either
gives the same logits as transformers or does not load. Export picks the first family whose
config.json reads back as exactly this model (family_for_export), so nothing is dropped silently.
"""
import dataclasses

from lmjax import config as config_lib
from lmjax.errors import UsageError
from lmjax.hf import moe, rope

GPT2, LLAMA = "gpt2", "llama"
GPT2_ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu_fast": "gelu",
                    "gelu": "gelu_exact"}
SLIDING, FULL = "sliding_attention", "full_attention"


@dataclasses.dataclass(frozen=True)
class Family:
    architecture: str  # the transformers class an export names
    gemma: bool = False  # (1 + w) RMSNorm, scaled embeddings, GeGLU, post-norms
    qk_norm: bool = False  # Qwen 3, Gemma 3
    qkv_bias: bool = False  # q/k/v always biased, output never (Qwen 2)
    layer_types: bool = False  # per-layer sliding/full attention from config.layer_types
    all_local: bool = False  # one sliding_window for every layer (Mistral)
    softcap: bool = False  # attention and final logit soft-capping (Gemma 2)
    local_rope: bool = False  # rope_parameters per layer type (Gemma 3)
    window_switch: bool = False  # sliding_window applies only with use_sliding_window (Qwen)
    moe: bool = False  # MLPs are routed experts (model.mlp = "moe"; lmjax.hf.moe)


FAMILIES = {
    GPT2: Family("GPT2LMHeadModel"),
    LLAMA: Family("LlamaForCausalLM"),
    "mistral": Family("MistralForCausalLM", all_local=True),
    "qwen2": Family("Qwen2ForCausalLM", qkv_bias=True, layer_types=True, window_switch=True),
    "qwen3": Family("Qwen3ForCausalLM", qk_norm=True, layer_types=True, window_switch=True),
    "gemma2": Family("Gemma2ForCausalLM", gemma=True, layer_types=True, softcap=True),
    "gemma3_text": Family("Gemma3ForCausalLM", gemma=True, qk_norm=True, layer_types=True,
                          local_rope=True),
    "mixtral": Family("MixtralForCausalLM", all_local=True, moe=True),
    # config.json keeps sliding_window only when use_sliding_window is set; then every layer.
    "qwen3_moe": Family("Qwen3MoeForCausalLM", qk_norm=True, all_local=True, moe=True),
}
SUPPORTED = ", ".join(f"{k} ({f.architecture})" for k, f in FAMILIES.items())
# Model fields an imported or exported checkpoint fixes (what init_from adopts).
ARCHITECTURE = ("num_layers", "d_model", "num_heads", "num_kv_heads", "head_dim", "d_ff",
                "vocab_size", "max_seq_len", "positions", "rope_theta", "rope_scaling",
                "rope_scaling_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                "rope_original_max_seq_len", "rope_local_theta", "norm", "norm_eps", "mlp",
                "use_bias", "qkv_bias", "qk_norm", "query_pre_attn_scalar", "attn_logit_softcap",
                "final_logit_softcap", "sliding_window", "local_layers", "scale_embeddings",
                "post_norms", "tie_embeddings")


def _unsupported(where, field, value, why):
    raise UsageError(f"{where}: {field}={value!r} is not supported ({why})")


def family_of(hf: dict, where: str) -> str:
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise UsageError(f"{where}: model_type={model_type!r} is not supported; lmjax imports "
                         f"{SUPPORTED}")
    archs = hf.get("architectures") or []
    causal = [a for a in archs if a.endswith("LMHeadModel") or a.endswith("ForCausalLM")
              or a.endswith("Model")]
    if archs and not causal:
        raise UsageError(f"{where}: architectures={archs} is not a causal LM; lmjax imports "
                         f"{SUPPORTED}")
    return model_type


def _gpt2_fields(hf, where):
    for field, bad, why in (("scale_attn_by_inverse_layer_idx", True, "scales by layer"),
                            ("add_cross_attention", True, "has cross-attention"),
                            ("scale_attn_weights", False, "unscaled attention scores")):
        if hf.get(field, not bad) == bad:
            _unsupported(where, field, bad, f"lmjax has no variant that {why}")
    act = hf.get("activation_function", "gelu_new")
    if act not in GPT2_ACTIVATIONS:
        _unsupported(where, "activation_function", act, f"use one of {', '.join(GPT2_ACTIVATIONS)}")
    d = hf["n_embd"]
    return dict(num_layers=hf["n_layer"], d_model=d, num_heads=hf["n_head"], num_kv_heads=0,
                head_dim=0, d_ff=hf.get("n_inner") or 4 * d, vocab_size=hf["vocab_size"],
                max_seq_len=hf["n_positions"], positions="learned", norm="layernorm",
                norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), mlp=GPT2_ACTIVATIONS[act],
                use_bias=True, tie_embeddings=bool(hf.get("tie_word_embeddings", True)))


def _windows(hf, fam: Family, where, num_layers, max_seq_len) -> dict:
    """sliding_window and local_layers from config.json's sliding_window / layer_types."""
    window = hf.get("sliding_window")
    if fam.layer_types:
        if fam.window_switch:
            window = window if hf.get("use_sliding_window", False) else None
        types = hf.get("layer_types")
        if types is None:
            _unsupported(where, "layer_types", None, "lmjax reads which layers are local from "
                         "layer_types; save the config with transformers >= 4.53")
        if len(types) != num_layers or set(types) - {SLIDING, FULL}:
            _unsupported(where, "layer_types", types, f"use {num_layers} entries, each "
                         f"{SLIDING!r} or {FULL!r}")
        if SLIDING not in types or window is None:
            return {"sliding_window": 0}
        pattern = "".join("L" if t == SLIDING else "G" for t in types)
        if set(pattern) == {"L"}:
            pattern = "all"
        return {"sliding_window": int(window), "local_layers": pattern}
    if fam.all_local and window is not None and window < max_seq_len:
        return {"sliding_window": int(window), "local_layers": "all"}
    if window is not None and window < max_seq_len and not fam.all_local:
        _unsupported(where, "sliding_window", window, "this family attends to the whole context")
    return {"sliding_window": 0}


def _decoder_fields(hf, fam: Family, where):
    heads, d = hf["num_attention_heads"], hf["hidden_size"]
    head_dim = hf.get("head_dim") or d // heads
    layers, max_len = hf["num_hidden_layers"], hf.get("max_position_embeddings", 2048)
    if fam.gemma:
        act_field, act_value, mlp, norm = "hidden_activation", "gelu_pytorch_tanh", "geglu", "gemma_rmsnorm"
    else:
        act_field, act_value, mlp, norm = "hidden_act", "silu", "swiglu", "rmsnorm"
    act = hf.get(act_field, act_value)
    if act != act_value:
        _unsupported(where, act_field, act, f"lmjax's {mlp} uses {act_value}")
    if hf.get("use_bidirectional_attention"):
        _unsupported(where, "use_bidirectional_attention", True, "lmjax is a causal decoder")
    if fam.gemma or fam.qk_norm or fam.qkv_bias:
        for field in ("attention_bias",):
            if hf.get(field):
                _unsupported(where, field, True, f"lmjax reads {hf['model_type']} without it")
    fields = dict(num_layers=layers, d_model=d, num_heads=heads,
                  num_kv_heads=hf.get("num_key_value_heads") or heads,
                  head_dim=0 if head_dim * heads == d else head_dim,
                  d_ff=hf["intermediate_size"], vocab_size=hf["vocab_size"], max_seq_len=max_len,
                  positions="rope", norm=norm, norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                  mlp=mlp, qkv_bias=fam.qkv_bias, qk_norm=fam.qk_norm,
                  use_bias=bool(hf.get("attention_bias") or hf.get("mlp_bias")),
                  scale_embeddings=fam.gemma, post_norms=fam.gemma,
                  tie_embeddings=bool(hf.get("tie_word_embeddings", fam.gemma)))
    fields.update(_windows(hf, fam, where, layers, max_len))
    if fam.moe:
        fields.update(mlp="moe", moe=moe.from_hf(hf, hf["model_type"], where))
    if fam.local_rope:
        fields.update(rope.from_hf(hf, where, FULL))
        fields["rope_local_theta"] = rope.from_hf(hf, where, SLIDING, allow_scaling=False)["rope_theta"]
    else:
        fields.update(rope.from_hf(hf, where))
    if fam.gemma:
        fields["query_pre_attn_scalar"] = float(hf.get("query_pre_attn_scalar", head_dim))
        fields["final_logit_softcap"] = float(hf.get("final_logit_softcapping") or 0.0)
        attn_cap = hf.get("attn_logit_softcapping")
        if fam.softcap:
            fields["attn_logit_softcap"] = float(attn_cap or 0.0)
        elif attn_cap:
            _unsupported(where, "attn_logit_softcapping", attn_cap, "transformers' "
                         f"{hf['model_type']} does not apply it; set it to null")
    return fields


def to_lmjax(hf: dict, where: str):
    """(family, full lmjax ConfigDict) for an HF config.json dict; a field that is missing or of
    the wrong type is a UsageError naming it."""
    if not isinstance(hf, dict):
        raise UsageError(f"{where}: holds a JSON {type(hf).__name__}, not an object of model "
                         "settings; use the config.json saved with the weights")
    try:
        return _to_lmjax(hf, where)
    except UsageError:
        raise
    except KeyError as e:
        raise UsageError(f"{where}: has no {e.args[0]!r}; use the config.json saved with the "
                         "weights") from None
    except (TypeError, ValueError, AttributeError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"{where}: a field has a value of the wrong type ({detail}); use the "
                         "config.json saved with the weights") from None


def _to_lmjax(hf: dict, where: str):
    family = family_of(hf, where)
    cfg = config_lib.base_config()
    fields = (_gpt2_fields(hf, where) if family == GPT2
              else _decoder_fields(hf, FAMILIES[family], where))
    for key, value in fields.items():
        if key == "moe":
            for name, v in value.items():
                cfg.model.moe[name] = v
        else:
            cfg.model[key] = value
    cfg.train.seq_len = min(cfg.train.seq_len, cfg.model.max_seq_len)
    return family, cfg


def architecture(m) -> dict:
    """The architecture fields of a model section, with equivalent spellings made equal."""
    from lmjax.model.positions import rope_frequencies
    from lmjax.model.transformer import local_flags
    out = {f: m[f] for f in ARCHITECTURE}
    head_dim = m.head_dim or m.d_model // m.num_heads
    out.update(head_dim=head_dim, num_kv_heads=m.num_kv_heads or m.num_heads,
               query_pre_attn_scalar=m.query_pre_attn_scalar or head_dim,
               local_layers=local_flags(m) if m.sliding_window else ())
    if m.positions == "rope":
        flags = local_flags(m)
        out["rope_theta"] = tuple(rope_frequencies(m, local=False))
        out["rope_local_theta"] = tuple(rope_frequencies(m, local=True)) if any(flags) else ()
    else:
        out["rope_theta"] = out["rope_local_theta"] = ()
    for f in ("rope_scaling", "rope_scaling_factor", "rope_low_freq_factor",
              "rope_high_freq_factor", "rope_original_max_seq_len"):
        del out[f]  # all in the frequencies compared above
    out["moe"] = moe.architecture(m)
    if m.mlp == "moe" and m.moe.every == 1:
        out["d_ff"] = 0  # no dense layer uses it
    return out


def to_hf_for(m, family: str, dtype: str, special_ids: dict) -> dict:
    """config.json expressing model section `m` in `family` (which may not express all of it)."""
    fam = FAMILIES[family]
    head_dim = m.head_dim or m.d_model // m.num_heads
    if family == GPT2:
        hf = {"vocab_size": m.vocab_size, "n_positions": m.max_seq_len, "n_embd": m.d_model,
              "n_layer": m.num_layers, "n_head": m.num_heads, "n_inner": m.d_ff,
              "activation_function": "gelu_new" if m.mlp == "gelu" else "gelu",
              "layer_norm_epsilon": m.norm_eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
              "attn_pdrop": 0.0, "scale_attn_weights": True}
    else:
        hf = {"vocab_size": m.vocab_size, "hidden_size": m.d_model,
              "intermediate_size": m.d_ff, "num_hidden_layers": m.num_layers,
              "num_attention_heads": m.num_heads,
              "num_key_value_heads": m.num_kv_heads or m.num_heads, "head_dim": head_dim,
              "max_position_embeddings": m.max_seq_len, "rms_norm_eps": m.norm_eps,
              "attention_dropout": 0.0}
        hf["hidden_activation" if fam.gemma else "hidden_act"] = (
            "gelu_pytorch_tanh" if fam.gemma else "silu")
        if family == LLAMA:
            hf.update(attention_bias=bool(m.use_bias), mlp_bias=bool(m.use_bias))
        elif family != "qwen2":
            hf["attention_bias"] = False
        hf.update(_windows_to_hf(m, fam))
        if fam.moe:
            hf.update(moe.to_hf(m, family, windowed=hf.get("sliding_window") is not None))
        global_rope = rope.to_hf(m)
        if fam.local_rope:
            local_theta = m.rope_local_theta or m.rope_theta
            hf["rope_parameters"] = {FULL: global_rope, SLIDING: {"rope_type": "default",
                                                                  "rope_theta": local_theta}}
        else:
            hf["rope_parameters"] = global_rope
        if fam.gemma:
            scalar = m.query_pre_attn_scalar or head_dim
            hf["query_pre_attn_scalar"] = int(scalar) if scalar == int(scalar) else scalar
            hf["final_logit_softcapping"] = m.final_logit_softcap or None
            hf["attn_logit_softcapping"] = (m.attn_logit_softcap or None) if fam.softcap else None
    hf.update({"architectures": [fam.architecture], "model_type": family,
               "tie_word_embeddings": bool(m.tie_embeddings), "torch_dtype": dtype})
    hf.update({k: v for k, v in special_ids.items() if v is not None and v >= 0})
    return hf


def _windows_to_hf(m, fam: Family) -> dict:
    from lmjax.model.transformer import local_flags
    flags = local_flags(m)
    if fam.all_local:
        return {"sliding_window": m.sliding_window if any(flags) else None}
    if not fam.layer_types:
        return {}
    out = {"sliding_window": m.sliding_window or None,
           "layer_types": [SLIDING if f else FULL for f in flags]}
    if fam.window_switch:
        out.update(use_sliding_window=any(flags), max_window_layers=m.num_layers)
        if not any(flags):
            out["sliding_window"] = None
    return out


def family_for_export(m) -> str:
    """The first HF family whose config.json reads back as exactly this model, or a UsageError
    naming the fields that no family expresses."""
    if m.get("parametrization", "sp") == "mup" and m.d_model != m.mup_base_width:
        raise UsageError(f"model.parametrization='mup' at d_model={m.d_model} (base "
                         f"{m.mup_base_width}): Hugging Face families have no μP logit or "
                         "attention multipliers, so the export would compute other logits")
    wanted = architecture(m)
    closest, got_of = None, {}
    for family in FAMILIES:
        try:
            _, back = to_lmjax(to_hf_for(m, family, "float32", {}), "export")
        except (UsageError, KeyError, ValueError):
            continue
        got = got_of[family] = architecture(back.model)
        differ = [f for f in wanted if wanted[f] != got[f]]
        if not differ:
            return family
        if closest is None or len(differ) < len(closest[1]):
            closest = (family, differ)
    family, differ = closest
    named = []
    for f in differ:
        if f == "moe":  # name the model.moe fields the family cannot hold
            got_moe = dict(zip(moe.ARCHITECTURE, got_of[family]["moe"] or ()))
            named += [(f"moe.{k}", m.moe[k]) for k in moe.ARCHITECTURE
                      if got_moe.get(k) != m.moe[k] and k != "d_ff"]
        else:
            named.append((f, m[f]))
    shown = ", ".join(f"model.{f}={v!r}" for f, v in named[:3])
    raise UsageError(f"{shown}: no Hugging Face family transformers loads expresses this model "
                     f"(closest: {family}, which cannot hold these); export needs a model "
                     f"of one of the families {', '.join(FAMILIES)}")


def to_hf(m, family: str, dtype: str, special_ids: dict) -> dict:
    """config.json for an lmjax model section (special_ids: bos_token_id/eos_token_id/...)."""
    return to_hf_for(m, family, dtype, special_ids)
