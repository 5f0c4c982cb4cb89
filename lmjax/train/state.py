"""The train state and how it is born: already sharded, never whole on one host."""
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from lmjax.model.moe import EXPERT_PARAMS
from lmjax.parallel import shardings as sharding
from lmjax.train import xla_options


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def strip_boxes(tree):
    """The values inside flax's logical-axis boxes, without applying any sharding constraint."""
    is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
    return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, tree,
                        is_leaf=is_box)


def dummy_tokens(cfg):
    return jnp.zeros((1, cfg.train.seq_len), jnp.int32)


def abstract_params(model, cfg):
    """Parameter shapes with their logical axis boxes, computed without allocating anything.

    The key and tokens are made inside the trace: under a mesh of compile-only devices (the
    planner's TPU targets) an eager array could not be placed.
    """
    return jax.eval_shape(lambda: model.init(jax.random.key(0), dummy_tokens(cfg)))["params"]


def state_shardings(model, tx, cfg, mesh, logical_rules):
    boxed = abstract_params(model, cfg)
    param_sh = sharding.logical_to_sharding(boxed, mesh, logical_rules)
    params = strip_boxes(boxed)
    abstract_opt = jax.eval_shape(tx.init, params)
    replicated = sharding.replicated(mesh)
    # Optimizer moments mirror the parameters; counters and scalars are replicated.
    # A partitioned optimizer (Muon's groups) holds each group's moments with MaskedNode where
    # the parameter belongs to another group: those stay as they are.
    masked = lambda x: isinstance(x, optax.MaskedNode)
    opt_sh = optax.tree_map_params(
        tx, lambda leaf, sh, p: leaf if masked(leaf) else moment_sharding(sh, p.shape, leaf.shape,
                                                                           replicated),
        abstract_opt, param_sh, params, transform_non_params=lambda _: replicated,
        is_leaf=masked)
    return TrainState(step=replicated, params=param_sh, opt_state=opt_sh)


def moment_sharding(param_sharding, param_shape, moment_shape, replicated):
    """A per-parameter moment's sharding: the parameter's, or, for a factored moment (Adafactor's
    row/column statistics: the parameter's shape with one axis removed), the parameter's with
    that axis's entry dropped. Anything else (placeholders) is replicated."""
    if tuple(moment_shape) == tuple(param_shape):
        return param_sharding
    spec = tuple(param_sharding.spec) + (None,) * (len(param_shape) - len(param_sharding.spec))
    if len(moment_shape) == len(param_shape) - 1:
        for i in range(len(param_shape)):
            if param_shape[:i] + param_shape[i + 1:] == tuple(moment_shape):
                return NamedSharding(param_sharding.mesh, P(*(spec[:i] + spec[i + 1:])))
    return replicated


def abstract_state(model, tx, cfg, shardings: TrainState) -> TrainState:
    """ShapeDtypeStructs with shardings: the target a checkpoint restores into."""
    params = strip_boxes(abstract_params(model, cfg))
    shapes = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                        opt_state=jax.eval_shape(tx.init, params))
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, shardings)


def init_state(model, tx, cfg, shardings: TrainState, params=None) -> TrainState:
    """Initialises under jit with out_shardings, so each device creates only its own shards.

    With `params` (fine-tuning), those weights are used and only the optimizer state is new.
    """
    def from_params(p):
        return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p))

    options = xla_options.compiler_options(cfg, xla_options.COMPILE_FAST)  # it runs once
    if params is not None:
        return jax.jit(from_params, out_shardings=shardings, compiler_options=options)(params)

    def init(key):
        return from_params(nn.meta.unbox(model.init(key, dummy_tokens(cfg))["params"]))

    return jax.jit(init, out_shardings=shardings, compiler_options=options)(
        jax.random.key(cfg.seed))


def count_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


def active_params(params, model_cfg) -> int:
    """Parameters one token uses: the routed experts count top_k of num_experts."""
    return _count(params, model_cfg, matmul_only=False)


def matmul_params(params, model_cfg=None) -> int:
    """Parameters in one token's matmuls: the active ones but lookup tables (pos_embed; untied
    embedding). Without model_cfg every expert counts (no MoE layers assumed)."""
    return _count(params, model_cfg, matmul_only=True)


def _count(params, model_cfg, matmul_only: bool) -> int:
    total = 0
    tied = "lm_head" not in params
    active = 1.0
    if model_cfg is not None and model_cfg.mlp == "moe":
        active = model_cfg.moe.top_k / model_cfg.moe.num_experts
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [p.key for p in path if hasattr(p, "key")]
        if matmul_only and (names[-1] == "pos_embed" or (names[-1] == "embedding" and not tied)):
            continue
        total += leaf.size * active if names[-1] in EXPERT_PARAMS else leaf.size
    return int(round(total))
