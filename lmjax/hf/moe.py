"""The mixture-of-experts fields of a Hugging Face config.json (Mixtral, Qwen3-MoE) <->
lmjax's model.moe. Router variants lmjax does not compute are refused by name."""
from lmjax.errors import UsageError

# model.moe fields an imported or exported checkpoint fixes.
ARCHITECTURE = ("num_experts", "top_k", "d_ff", "shared_d_ff", "shared_gate", "every",
                "renormalize")


def _unsupported(where, field, value, why):
    raise UsageError(f"{where}: {field}={value!r} is not supported ({why})")


def from_hf(hf: dict, family: str, where: str) -> dict:
    """model.moe values for a config.json of an MoE family."""
    if family == "mixtral":
        jitter = hf.get("router_jitter_noise", 0.0)
        if jitter:
            _unsupported(where, "router_jitter_noise", jitter, "lmjax's router adds no noise")
        return dict(num_experts=hf["num_local_experts"], top_k=hf["num_experts_per_tok"],
                    d_ff=hf["intermediate_size"], shared_d_ff=0, shared_gate=False, every=1,
                    renormalize=True,
                    aux_loss_coef=float(hf.get("router_aux_loss_coef", 0.0)))
    only_dense = hf.get("mlp_only_layers") or []
    if only_dense:
        _unsupported(where, "mlp_only_layers", only_dense, "lmjax places dense layers by "
                     "decoder_sparse_step only")
    # Hub files say num_experts; transformers 5 writes its attribute name, num_local_experts.
    experts = hf["num_experts"] if "num_experts" in hf else hf["num_local_experts"]
    return dict(num_experts=experts, top_k=hf["num_experts_per_tok"],
                d_ff=hf["moe_intermediate_size"], shared_d_ff=0, shared_gate=False,
                every=int(hf.get("decoder_sparse_step", 1)),
                renormalize=bool(hf.get("norm_topk_prob", False)),
                aux_loss_coef=float(hf.get("router_aux_loss_coef", 0.0)))


def to_hf(m, family: str, windowed: bool) -> dict:
    """config.json entries for model section `m` in an MoE family (which may not hold all of it)."""
    e = m.moe
    d_ff = e.d_ff or m.d_ff
    if family == "mixtral":
        return {"num_local_experts": e.num_experts, "num_experts_per_tok": e.top_k,
                "intermediate_size": d_ff, "router_aux_loss_coef": e.aux_loss_coef,
                "router_jitter_noise": 0.0}
    return {"num_experts": e.num_experts, "num_experts_per_tok": e.top_k,
            "moe_intermediate_size": d_ff, "intermediate_size": m.d_ff,
            "norm_topk_prob": bool(e.renormalize), "decoder_sparse_step": e.every,
            "mlp_only_layers": [], "router_aux_loss_coef": e.aux_loss_coef,
            "use_sliding_window": windowed}


def architecture(m) -> tuple:
    """model.moe's architecture, with the defaulted expert width resolved (() when dense)."""
    if m.mlp != "moe":
        return ()
    e = m.moe
    return tuple(e[f] if f != "d_ff" else e.d_ff or m.d_ff for f in ARCHITECTURE)
