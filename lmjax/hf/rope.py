"""RoPE settings between HF config.json (rope_parameters, or legacy rope_theta/rope_scaling) and
lmjax's model.rope_* fields. Types lmjax does not compute (yarn, dynamic, longrope, ...) and
partial rotation are refused by name."""
from lmjax.errors import UsageError

SUPPORTED_TYPES = ("default", "linear", "llama3")


def _refuse(where, field, value, why):
    raise UsageError(f"{where}: {field}={value!r} is not supported ({why})")


def _section(hf: dict, layer_type: str | None) -> tuple[str, dict]:
    """(name, merged dict) of the RoPE parameters for one layer type (None = the only one)."""
    params = hf.get("rope_parameters") or {}
    if layer_type is not None and isinstance(params.get(layer_type), dict):
        return f"rope_parameters.{layer_type}", dict(params[layer_type])
    if params:
        return "rope_parameters", dict(params)
    merged = dict(hf.get("rope_scaling") or {})
    merged.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    return "rope_scaling", merged


def from_hf(hf: dict, where: str, layer_type: str | None = None, allow_scaling=True) -> dict:
    """lmjax model fields (rope_theta, rope_scaling, ...) for one layer type's RoPE."""
    name, section = _section(hf, layer_type)
    kind = section.get("rope_type", section.get("type", "default"))
    if kind not in SUPPORTED_TYPES or (kind != "default" and not allow_scaling):
        allowed = SUPPORTED_TYPES if allow_scaling else ("default",)
        _refuse(where, f"{name}.rope_type", kind, f"lmjax computes RoPE types "
                f"{', '.join(allowed)} here")
    for key, value in (("partial_rotary_factor", section.get("partial_rotary_factor", 1.0)),
                       ("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))):
        if value != 1.0:
            _refuse(where, key, value, "lmjax rotates the whole head")
    if section.get("attention_factor") not in (None, 1.0):
        _refuse(where, f"{name}.attention_factor", section["attention_factor"],
                "lmjax does not rescale attention for RoPE")
    fields = {"rope_theta": float(section.get("rope_theta", hf.get("rope_theta", 10000.0))),
              "rope_scaling": "none" if kind == "default" else kind}
    if kind in ("linear", "llama3"):
        fields["rope_scaling_factor"] = float(section["factor"])
    if kind == "llama3":
        fields.update(rope_low_freq_factor=float(section["low_freq_factor"]),
                      rope_high_freq_factor=float(section["high_freq_factor"]),
                      rope_original_max_seq_len=int(section["original_max_position_embeddings"]))
    return fields


def to_hf(m) -> dict:
    """rope_parameters for an lmjax model section's global layers."""
    out = {"rope_type": "default" if m.rope_scaling == "none" else m.rope_scaling,
           "rope_theta": m.rope_theta}
    if m.rope_scaling in ("linear", "llama3"):
        out["factor"] = m.rope_scaling_factor
    if m.rope_scaling == "llama3":
        out.update(low_freq_factor=m.rope_low_freq_factor,
                   high_freq_factor=m.rope_high_freq_factor,
                   original_max_position_embeddings=m.rope_original_max_seq_len)
    return out
