"""Which HF tensor holds which lmjax parameter, and the reshapes/transposes between them.

lmjax kernels are (in..., out...): query (d_model, heads, head_dim), out (heads, head_dim,
d_model), MLP (d_model, d_ff) / (d_ff, d_model). torch nn.Linear weights are (out, in); GPT-2's
Conv1D weights are (in, out), with q, k and v fused along the output axis of c_attn.
"""
import dataclasses
import math

import numpy as np

from lmjax.hf.configs import GPT2


@dataclasses.dataclass(frozen=True)
class Entry:
    path: tuple  # lmjax parameter path, below the layer for per-layer entries
    hf: str | None  # HF tensor name, "{i}" = layer index; None = HF has none (zeros in lmjax)
    kind: str  # copy (same shape) | flat (HF 1-D) | conv (HF (in, out)) | linear (HF (out, in))
    n_in: int = 1  # leading lmjax dims on the input side of a kernel (0 for biases)
    part: tuple = (0, 1)  # (index, count): one of `count` equal slices of HF's last axis
    layer: bool = True
    expert: bool = False  # lmjax stacks experts on a leading axis; HF has one tensor each ("{e}")
    moe_layers: bool | None = None  # only MoE layers (True), only dense ones (False), all (None)

    def name(self, layer, expert=None) -> str:
        return self.hf.format(i=layer, e=expert)

    def hf_shape(self, lmjax_shape) -> tuple:
        lead = math.prod(lmjax_shape[:self.n_in])
        rest = math.prod(lmjax_shape[self.n_in:])
        count = self.part[1]
        if self.kind == "copy":
            return tuple(lmjax_shape)
        if self.kind == "flat":
            return (math.prod(lmjax_shape),)
        if self.kind == "conv":
            return (lead, rest * count) if self.n_in else (rest * count,)
        return (rest, lead)  # linear

    def to_lmjax(self, hf_value: np.ndarray, lmjax_shape) -> np.ndarray:
        index, count = self.part
        if self.kind == "linear":
            hf_value = hf_value.T
        if count > 1:
            width = hf_value.shape[-1] // count
            hf_value = hf_value[..., index * width:(index + 1) * width]
        return np.ascontiguousarray(hf_value).reshape(lmjax_shape)

    def to_hf(self, values: list) -> np.ndarray:
        """HF tensor from the lmjax values of all parts of this entry's HF tensor, in order."""
        shape = values[0].shape
        lead, rest = math.prod(shape[:self.n_in]), math.prod(shape[self.n_in:])
        if self.kind == "copy":
            return values[0]
        if self.kind == "flat":
            return values[0].reshape(-1)
        if self.kind == "conv":
            flat = [v.reshape((lead, rest) if self.n_in else (rest,)) for v in values]
            return np.concatenate(flat, axis=-1) if len(flat) > 1 else flat[0]
        return np.ascontiguousarray(values[0].reshape(lead, rest).T)


def entries(family: str, model_cfg, hf_cfg: dict, prefix: str) -> list[Entry]:
    """All lmjax <- HF correspondences for one model (biases only where lmjax has them)."""
    m = model_cfg
    if family == GPT2:
        return _gpt2(m, prefix)
    out = _llama(family, m, hf_cfg, prefix)
    if family in MOE_TENSORS:
        out = [dataclasses.replace(e, moe_layers=False) if e.path[0] == "mlp" else e
               for e in out] + _moe(prefix, *MOE_TENSORS[family])
    return out


# family -> (MoE block, router, expert tensor per lmjax weight: gate, up, down)
MOE_TENSORS = {
    "mixtral": ("block_sparse_moe", "gate", ("w1", "w3", "w2")),
    "qwen3_moe": ("mlp", "gate", ("gate_proj", "up_proj", "down_proj")),
}


def _moe(p, block, router, names) -> list[Entry]:
    h = f"{p}layers.{{i}}.{block}."
    out = [Entry(("mlp", "router"), h + router + ".weight", "linear", moe_layers=True)]
    for lmjax_name, hf_name in zip(("expert_gate", "expert_up", "expert_down"), names):
        out.append(Entry(("mlp", lmjax_name), h + "experts.{e}." + hf_name + ".weight", "linear",
                         expert=True, moe_layers=True))
    return out


def _gpt2(m, p) -> list[Entry]:
    h = p + "h.{i}."
    out = [Entry(("embed", "embedding"), p + "wte.weight", "copy", layer=False),
           Entry(("pos_embed",), p + "wpe.weight", "copy", layer=False),
           Entry(("final_norm", "scale"), p + "ln_f.weight", "copy", layer=False),
           Entry(("final_norm", "bias"), p + "ln_f.bias", "copy", layer=False)]
    if not m.tie_embeddings:
        out.append(Entry(("lm_head", "kernel"), "lm_head.weight", "linear", layer=False))
    for norm, hf in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
        out += [Entry((norm, "scale"), h + hf + ".weight", "copy"),
                Entry((norm, "bias"), h + hf + ".bias", "copy")]
    for j, name in enumerate(("query", "key", "value")):
        out += [Entry(("attn", name, "kernel"), h + "attn.c_attn.weight", "conv", 1, (j, 3)),
                Entry(("attn", name, "bias"), h + "attn.c_attn.bias", "conv", 0, (j, 3))]
    out += [Entry(("attn", "out", "kernel"), h + "attn.c_proj.weight", "conv", 2),
            Entry(("attn", "out", "bias"), h + "attn.c_proj.bias", "conv", 0),
            Entry(("mlp", "fc_in", "kernel"), h + "mlp.c_fc.weight", "conv", 1),
            Entry(("mlp", "fc_in", "bias"), h + "mlp.c_fc.bias", "conv", 0),
            Entry(("mlp", "fc_out", "kernel"), h + "mlp.c_proj.weight", "conv", 1),
            Entry(("mlp", "fc_out", "bias"), h + "mlp.c_proj.bias", "conv", 0)]
    return out


def _llama(family, m, hf_cfg, p) -> list[Entry]:
    """LLaMA-layout decoders (llama, mistral, qwen2, qwen3, gemma2, gemma3_text)."""
    h = p + "layers.{i}."
    out = [Entry(("embed", "embedding"), p + "embed_tokens.weight", "copy", layer=False),
           Entry(("final_norm", "scale"), p + "norm.weight", "copy", layer=False)]
    if not m.tie_embeddings:
        out.append(Entry(("lm_head", "kernel"), "lm_head.weight", "linear", layer=False))
    if m.post_norms:  # Gemma: post_attention_layernorm normalises the attention output
        norms = (("attn_norm", "input_layernorm"), ("attn_post_norm", "post_attention_layernorm"),
                 ("mlp_norm", "pre_feedforward_layernorm"),
                 ("mlp_post_norm", "post_feedforward_layernorm"))
    else:
        norms = (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm"))
    out += [Entry((name, "scale"), h + hf + ".weight", "copy") for name, hf in norms]
    if m.qk_norm:
        out += [Entry(("attn", "query_norm", "scale"), h + "self_attn.q_norm.weight", "copy"),
                Entry(("attn", "key_norm", "scale"), h + "self_attn.k_norm.weight", "copy")]
    attention_bias = bool(hf_cfg.get("attention_bias", False))
    qkv_bias = attention_bias or family == "qwen2"
    mlp_bias = bool(hf_cfg.get("mlp_bias", False))
    for name, hf, n_in, lmjax_bias, has_bias in (
            ("query", "self_attn.q_proj", 1, m.use_bias or m.qkv_bias, qkv_bias),
            ("key", "self_attn.k_proj", 1, m.use_bias or m.qkv_bias, qkv_bias),
            ("value", "self_attn.v_proj", 1, m.use_bias or m.qkv_bias, qkv_bias),
            ("out", "self_attn.o_proj", 2, m.use_bias, attention_bias)):
        out.append(Entry(("attn", name, "kernel"), h + hf + ".weight", "linear", n_in))
        if lmjax_bias:
            out.append(Entry(("attn", name, "bias"), h + hf + ".bias" if has_bias else None,
                             "flat", 0))
    for name in ("gate", "up", "down"):
        hf = h + f"mlp.{name}_proj"
        out.append(Entry(("mlp", name, "kernel"), hf + ".weight", "linear"))
        if m.use_bias:
            out.append(Entry(("mlp", name, "bias"), hf + ".bias" if mlp_bias else None, "flat", 0))
    return out


def ignorable(name: str) -> bool:
    """HF tensors that are buffers, not weights (older GPT-2 and LLaMA checkpoints carry them)."""
    return name.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq"))
