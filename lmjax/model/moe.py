"""Mixture-of-experts feed-forward (model.mlp = "moe"): top-k routing over SwiGLU experts.

Routing (float32, whatever the compute dtype): p = softmax(x @ W_router) over E experts; each
token takes its top-k experts, weighted by their p (renormalised to sum 1 with moe.renormalize,
as Mixtral and Qwen3-MoE's norm_topk_prob). An optional shared expert sees every token.

Dispatch, by name in moe.dispatch (DISPATCH), for N tokens, k, E experts, width D, expert F:
  dropless  the N·k token-expert assignments are sorted by expert and the experts run as grouped
            matmuls (jax.lax.ragged_dot): no token is dropped and no padding is computed.
            Memory: the gathered (N·k, D) inputs and (N·k, F) hidden activations. FLOPs:
            6·N·k·D·F forward, exactly the active experts' (on TPU and GPU, where ragged_dot is a
            native grouped matmul; XLA:CPU expands it to a masked matmul per group, E times that).
  capacity  each expert gets C = ceil(capacity_factor · N·k / E) slots, filled first-choice-first
            in token order; assignments past C are dropped (counted in moe/dropped_fraction) and
            that token-expert pair contributes nothing. Memory: (E, C, D) and (E, C, F) buffers;
            FLOPs: 6·E·C·D·F = capacity_factor × the active FLOPs, padding included.

Expert parallelism: the expert weights' leading dimension has the logical name "expert" (mesh
axis `expert` by default). How tokens reach their experts is chosen by name in
moe.expert_parallel (EXPERT_PARALLEL):
  shard_map    (default) the experts run inside a shard_map over the whole mesh: each device
               gathers the tokens of its `expert` group (they are batch-sharded over that axis
               too), runs only its own experts on the tokens routed to them, and the partial
               outputs are summed back and scattered to the tokens' owners (reduce-scatter).
               Weights sharded over fsdp are gathered on entry; a tensor-sharded expert width is
               summed over its axis. Capacity is counted per such token group, so with several
               groups a capacity run drops per group (dropless is mesh-independent).
  constraints  the same DISPATCH function on the global token array, tokens pinned
               batch-sharded and expert weights expert-sharded by logical constraints, the rest
               left to XLA's partitioner (Shardy). Dropless, it splits ragged_dot over its group
               (expert) and width (tensor) dimensions and never gathers the expert weights, but
               not over tokens: every device all-gathers all N·k assignment ids for the argsort,
               builds the whole sorted (N·k, D) row matrix (an all-reduce), runs its experts
               over all N·k rows (other experts' rows masked) and all-reduces the (N·k, F) and
               (N·k, D) results, so per-device work and traffic grow with the global batch, not
               the local one. Capacity's (E, C, D) buffers it moves with all-to-alls (GShard's
               pattern). On 8 fake devices: 0.5-0.85x shard_map's speed per step dropless, 4-5x
               its bytes of collectives dropless and about 3x in capacity mode
               (benchmarks/moe_expert_parallel.py). Capacity is counted over the global batch.

Auxiliary outputs, sown into lmjax.model.aux's collection: the load-balancing loss
E · Σ_e f_e · P_e (f_e = token-expert assignments to e per token, P_e = mean router probability;
Switch Transformer, as Mixtral computes it), the z-loss mean(logsumexp(logits)²) (ST-MoE), both
times their coefficients, averaged over the MoE layers; and router metrics.
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.model import aux
from lmjax.model.layers import Projection, constrain, logical_param, out_init_std

# Expert weights: (experts, in, out). Parameters with these names count top_k/num_experts of
# their size as active (lmjax.train.state.active_params).
EXPERT_PARAMS = ("expert_gate", "expert_up", "expert_down")
UP_AXES, DOWN_AXES = ("expert", "embed", "mlp"), ("expert", "mlp", "embed")


def expert_d_ff(cfg) -> int:
    return cfg.moe.d_ff or cfg.d_ff


def is_moe_layer(cfg, layer: int) -> bool:
    return cfg.mlp == "moe" and (layer + 1) % cfg.moe.every == 0


def num_moe_layers(cfg) -> int:
    return sum(is_moe_layer(cfg, i) for i in range(cfg.num_layers))


# ---------------------------------------------------------------- routing (global, float32)

def route(logits_NxE, top_k: int, renormalize: bool):
    """(expert ids (N, k), combine weights (N, k), probabilities (N, E)) from router logits."""
    probs = jax.nn.softmax(logits_NxE, axis=-1)
    weights, experts = jax.lax.top_k(probs, top_k)
    if renormalize:
        weights = weights / weights.sum(-1, keepdims=True)
    return experts, weights, probs


def router_losses(logits_NxE, probs_NxE, experts_NxK):
    """(load-balancing loss, z-loss, assignments per expert (E,)) over all N tokens."""
    N, E = probs_NxE.shape
    counts = jax.nn.one_hot(experts_NxK, E, dtype=jnp.float32).sum((0, 1))
    balance = E * jnp.sum(counts / N * probs_NxE.mean(0))
    z = jnp.mean(jax.nn.logsumexp(logits_NxE, axis=-1) ** 2)
    return balance, z, counts


# ---------------------------------------------------------------- dispatch (per device)

def _swiglu_grouped(xs, gate, up, down, sizes):
    h = jax.nn.silu(jax.lax.ragged_dot(xs, gate, sizes)) * jax.lax.ragged_dot(xs, up, sizes)
    return jax.lax.ragged_dot(h, down, sizes)


def dropless(x_NxD, local_NxK, weights_NxK, gate, up, down, cfg):
    """Experts [0, E_local) of `local` (others are -1 or >= E_local: not here) on their tokens."""
    N, K = local_NxK.shape
    E_local = gate.shape[0]
    # Assignments for experts elsewhere sort last, into no group: ragged_dot gives them zeros.
    flat = jnp.where((local_NxK >= 0) & (local_NxK < E_local), local_NxK, E_local).reshape(-1)
    order = jnp.argsort(flat, stable=True)
    sizes = jnp.sum(flat[:, None] == jnp.arange(E_local)[None, :], axis=0, dtype=jnp.int32)
    ys = _swiglu_grouped(x_NxD[order // K], gate, up, down, sizes)
    here = (flat < E_local).astype(jnp.float32)
    scale = (weights_NxK.reshape(-1) * here)[order]
    ys = ys * scale[:, None].astype(ys.dtype)
    unsorted = ys[jnp.argsort(order)]  # a gather, not a scatter: cheaper to differentiate
    return unsorted.reshape(N, K, -1).sum(1), jnp.zeros((), jnp.float32)


def capacity(x_NxD, local_NxK, weights_NxK, gate, up, down, cfg):
    """Fixed (E_local, C) buffers; returns (output, dropped assignment count)."""
    N, K = local_NxK.shape
    E_local, D = gate.shape[0], x_NxD.shape[-1]
    C = max(1, math.ceil(cfg.moe.capacity_factor * N * K / cfg.moe.num_experts))
    # Choice-major: every token's first choice is placed before any second choice.
    flat = local_NxK.T.reshape(-1)
    here = (flat >= 0) & (flat < E_local)
    onehot = (flat[:, None] == jnp.arange(E_local)[None, :]) & here[:, None]
    position = jnp.sum(jnp.cumsum(onehot, axis=0) * onehot, axis=1) - 1
    kept = here & (position < C)
    slot = jnp.where(kept, flat * C + position, E_local * C)  # the last slot takes the overflow
    token = jnp.tile(jnp.arange(N), K)
    buffer = jnp.zeros((E_local * C + 1, D), x_NxD.dtype).at[slot].add(x_NxD[token])
    buffer = buffer[:-1].reshape(E_local, C, D)
    h = jax.nn.silu(jnp.einsum("ecd,edf->ecf", buffer, gate)) * jnp.einsum("ecd,edf->ecf",
                                                                           buffer, up)
    out = jnp.einsum("ecf,efd->ecd", h, down).reshape(E_local * C, D)
    out = jnp.concatenate([out, jnp.zeros((1, D), out.dtype)])
    scale = (weights_NxK.T.reshape(-1) * kept).astype(out.dtype)
    ys = out[slot] * scale[:, None]
    dropped = jnp.sum(here & ~kept).astype(jnp.float32)
    return ys.reshape(K, N, D).sum(0), dropped


DISPATCH = {
    "dropless": dropless,
    "capacity": capacity,
}


# ---------------------------------------------------------------- expert parallelism

def _mesh_axes(logical: str) -> tuple:
    """The mesh axes a logical name maps to under the rules in force (() = unsharded)."""
    axes = nn.logical_to_mesh_axes((logical,))[0]
    if axes is None:
        return ()
    return tuple(axes) if isinstance(axes, (tuple, list)) else (axes,)


def _experts_on_shard(x_BxTxD, experts_NxK, weights_NxK, gate, up, down, *, cfg, token_axes,
                      expert_axes, width_axes):
    """One device's part: its experts on the tokens routed to them, summed back to owners."""
    B, T, D = x_BxTxD.shape
    x_NxD = x_BxTxD.reshape(B * T, D)
    gathered = bool(expert_axes) and set(expert_axes) <= set(token_axes)
    if gathered:  # this device's expert group holds other rows of the batch: bring them here
        x_NxD = jax.lax.all_gather(x_NxD, expert_axes, tiled=True)
        experts_NxK = jax.lax.all_gather(experts_NxK, expert_axes, tiled=True)
        weights_NxK = jax.lax.all_gather(weights_NxK, expert_axes, tiled=True)
    first = jax.lax.axis_index(expert_axes) * gate.shape[0] if expert_axes else 0
    y_NxD, dropped = DISPATCH[cfg.moe.dispatch](x_NxD, experts_NxK - first, weights_NxK, gate,
                                                up, down, cfg)
    if gathered:
        y_NxD = jax.lax.psum_scatter(y_NxD, expert_axes, scatter_dimension=0, tiled=True)
    elif expert_axes:
        y_NxD = jax.lax.psum(y_NxD, expert_axes)
    if width_axes:
        y_NxD = jax.lax.psum(y_NxD, width_axes)
    # Each device counted drops of its own experts on its own tokens.
    count_axes = tuple(dict.fromkeys(token_axes + expert_axes))
    if count_axes:
        dropped = jax.lax.psum(dropped, count_axes)
    return y_NxD.reshape(B, T, D), dropped


def shard_map_transport(x_BxTxD, experts_BxTxK, weights_BxTxK, gate, up, down, cfg):
    """Each device runs its own experts on its expert group's tokens inside a shard_map."""
    B, T, K = experts_BxTxK.shape
    mesh = jax.sharding.get_abstract_mesh()
    args = (x_BxTxD, experts_BxTxK.reshape(B, T * K), weights_BxTxK.reshape(B, T * K),
            gate, up, down)

    def body(x, e, w, g, u, d, **axes):
        y, dropped = _experts_on_shard(x, e.reshape(-1, K), w.reshape(-1, K), g, u, d, cfg=cfg,
                                       **axes)
        return y, dropped

    if mesh.empty:  # a bare apply outside any mesh: one device holds everything
        return body(*args, token_axes=(), expert_axes=(), width_axes=())
    P = jax.sharding.PartitionSpec
    token_axes = _mesh_axes("batch")
    if B % math.prod(mesh.shape[a] for a in token_axes):
        token_axes = ()  # e.g. a decode batch smaller than the batch shards: every device has all
    expert_axes, width_axes = _mesh_axes("expert"), _mesh_axes("mlp")
    rows = P(token_axes or None)
    up_spec = P(expert_axes or None, None, width_axes or None)
    down_spec = P(expert_axes or None, width_axes or None, None)
    fn = jax.shard_map(
        functools.partial(body, token_axes=token_axes, expert_axes=expert_axes,
                          width_axes=width_axes),
        mesh=mesh, in_specs=(rows, rows, rows, up_spec, up_spec, down_spec),
        out_specs=(rows, P()))
    return fn(*args)


def constraints_transport(x_BxTxD, experts_BxTxK, weights_BxTxK, gate, up, down, cfg):
    """DISPATCH on the global token array; the partitioner places it from sharding constraints.

    Tokens are pinned batch-sharded and the expert weights expert-sharded, as everywhere else;
    what moves between them is left to XLA (see the module docstring for what it chooses).
    """
    B, T, K = experts_BxTxK.shape
    D = x_BxTxD.shape[-1]
    x_NxD = constrain(x_BxTxD.reshape(B * T, D), ("batch", "act_embed"))
    experts_NxK = constrain(experts_BxTxK.reshape(B * T, K), ("batch", None))
    weights_NxK = constrain(weights_BxTxK.reshape(B * T, K), ("batch", None))
    gate, up, down = (constrain(w, axes) for w, axes in
                      ((gate, UP_AXES), (up, UP_AXES), (down, DOWN_AXES)))
    y_NxD, dropped = DISPATCH[cfg.moe.dispatch](x_NxD, experts_NxK, weights_NxK, gate, up, down,
                                                cfg)
    return constrain(y_NxD.reshape(B, T, D), ("batch", "act_len", "act_embed")), dropped


# How tokens reach the devices that hold their experts, by name in moe.expert_parallel.
EXPERT_PARALLEL = {
    "shard_map": shard_map_transport,
    "constraints": constraints_transport,
}


def run_experts(x_BxTxD, experts_BxTxK, weights_BxTxK, gate, up, down, cfg):
    """The routed experts' output (B, T, D) and the dropped assignment count, on any mesh."""
    return EXPERT_PARALLEL[cfg.moe.expert_parallel](x_BxTxD, experts_BxTxK, weights_BxTxK,
                                                    gate, up, down, cfg)


# ---------------------------------------------------------------- the layer

def _shared_expert(cfg, x_BxTxD):
    D, F = cfg.d_model, cfg.moe.shared_d_ff
    param_dtype, dtype = jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)

    def proj(name, shape_in, shape_out, axes, std):
        return Projection(shape_in, shape_out, axes, False, std, param_dtype, dtype, name=name)

    gate = proj("shared_gate", (D,), (F,), ("embed", "mlp"), cfg.init_std)(x_BxTxD)
    up = proj("shared_up", (D,), (F,), ("embed", "mlp"), cfg.init_std)(x_BxTxD)
    h = constrain(jax.nn.silu(gate) * up, ("batch", "act_len", "act_mlp"))
    return proj("shared_down", (F,), (D,), ("mlp", "embed"), out_init_std(cfg))(h)


def moe_mlp(module, cfg, x_BxTxD):
    """The MLPS entry "moe": routed SwiGLU experts (+ shared expert); sows losses and metrics."""
    m = cfg.moe
    B, T, D = x_BxTxD.shape
    E, K, F = m.num_experts, m.top_k, expert_d_ff(cfg)
    param_dtype, dtype = jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)
    init = nn.initializers.normal
    router = logical_param(module, "router", (D, E), ("embed", None), init(cfg.init_std),
                           param_dtype)
    gate = logical_param(module, "expert_gate", (E, D, F), UP_AXES, init(cfg.init_std),
                         param_dtype)
    up = logical_param(module, "expert_up", (E, D, F), UP_AXES, init(cfg.init_std), param_dtype)
    down = logical_param(module, "expert_down", (E, F, D), DOWN_AXES, init(out_init_std(cfg)),
                         param_dtype)

    logits = x_BxTxD.reshape(B * T, D).astype(jnp.float32) @ router.astype(jnp.float32)
    experts, weights, probs = route(logits, K, m.renormalize)
    y, dropped = run_experts(x_BxTxD, experts.reshape(B, T, K), weights.reshape(B, T, K),
                             gate.astype(dtype), up.astype(dtype), down.astype(dtype), cfg)
    if m.shared_d_ff:
        shared = _shared_expert(cfg, x_BxTxD)
        if m.shared_gate:
            g = Projection((D,), (1,), ("embed", None), False, cfg.init_std, param_dtype, dtype,
                           name="shared_expert_gate")(x_BxTxD)
            shared = shared * jax.nn.sigmoid(g.astype(jnp.float32)).astype(shared.dtype)
        y = y + shared

    balance, z, counts = router_losses(logits, probs, experts)
    layers = num_moe_layers(cfg)
    aux.report(module, loss=(m.aux_loss_coef * balance + m.z_loss_coef * z) / layers, metrics={
        "moe/balance_loss": balance, "moe/z_loss": z,
        "moe/router_entropy": -jnp.mean(jnp.sum(probs * jnp.log(probs + 1e-30), axis=-1)),
        "moe/expert_fraction_max": counts.max() / (B * T * K),
        "moe/expert_fraction_min": counts.min() / (B * T * K),
        "moe/dropped_fraction": dropped / (B * T * K)})
    return y.astype(dtype)
