"""One pass of config validation, before anything compiles or writes.

`prepare(cfg, num_devices)` adopts an `init_from` source's architecture, then validates once.
Allowed names come from the registries of the modules that own each kind, so a new attention
backend, MLP, norm, position encoding, optimizer, schedule or metrics writer is one edit there.
"""
import glob
import math
import os

from lmjax import config as config_lib, data
from lmjax.errors import ConfigError, UsageError
from lmjax.model.attention import ATTENTION_BACKENDS, DROPOUT_BACKENDS, SOFTCAP_BACKENDS
from lmjax.model.dropout import DROPOUT_RNGS
from lmjax.model.layers import NORMS
from lmjax.model.mlp import MLPS
from lmjax.model.parametrization import PARAMETRIZATIONS
from lmjax.model.moe import DISPATCH, EXPERT_PARALLEL
from lmjax.model.positions import POSITIONS, ROPE_SCALINGS
from lmjax.parallel.mesh import BATCH_AXES, mesh_shape
from lmjax.train.host_memory import HOST_ALLOCATORS
from lmjax.train.metrics import WRITERS, check_writer_packages
from lmjax.train.optim import OPTIMIZERS, SCHEDULES
from lmjax.train.schedules import DECAY_SHAPES, horizon
from lmjax.train.xla_options import parse as parse_xla_options


def prepare(cfg, num_devices: int | None = None, log=print):
    """The config a run trains: init_from's architecture adopted, then validated once."""
    if cfg.init_from:
        from lmjax.hf.init_from import adopt_architecture
        adopt_architecture(cfg, log=log)
    validate(cfg, num_devices)
    return cfg


def _positive(cfg, field):
    value = cfg
    for part in field.split("."):
        value = value[part]
    if value <= 0:
        raise ConfigError(f"{field}={value}: must be > 0")


def validate(cfg, num_devices: int | None = None):
    """Checks everything that can be checked without compiling; raises ConfigError."""
    config_lib.check_known_fields(cfg, config_lib.base_config(), "config")
    m, t, o = cfg.model, cfg.train, cfg.optim
    for field in ("train.steps", "train.batch_size", "train.seq_len", "optim.lr",
                  "model.num_layers", "model.d_model", "model.num_heads", "model.d_ff",
                  "model.vocab_size", "model.max_seq_len", "train.log_every", "optim.muon_lr",
                  "train.eval_every", "train.checkpoint_every", "optim.grad_accum_steps"):
        _positive(cfg, field)
    if t.hang_timeout_s < 0:
        raise ConfigError(f"train.hang_timeout_s={t.hang_timeout_s}: must be >= 0 (0 = automatic)")
    for field in ("train.hang_compile_timeout_s", "train.barrier_timeout_s"):
        _positive(cfg, field)
    if t.eval_steps < 0:
        raise ConfigError(f"train.eval_steps={t.eval_steps}: must be >= 0 (0 = no eval)")
    if t.eval_tasks_every < 0:
        raise ConfigError(f"train.eval_tasks_every={t.eval_tasks_every}: must be >= 0 (0 = at "
                          "every train.eval_every)")
    parse_xla_options(t.xla_options)  # XLA itself checks the names when the run starts
    for field in ("profile_start", "profile_steps"):
        if t[field] < 0:
            raise ConfigError(f"train.{field}={t[field]}: must be >= 0")
    if t.profile_steps and t.profile_start + t.profile_steps > t.steps:
        raise ConfigError(f"train.profile_start={t.profile_start} + train.profile_steps="
                          f"{t.profile_steps}: past train.steps={t.steps}; start the trace earlier")
    if t.eval_tasks:
        from lmjax.train import task_evals
        task_evals.check(cfg)
    if o.warmup_steps < 0:
        raise ConfigError(f"optim.warmup_steps={o.warmup_steps}: must be >= 0")
    if o.min_lr < 0 or o.min_lr > o.lr:
        raise ConfigError(f"optim.min_lr={o.min_lr}: must lie between 0 and optim.lr={o.lr}")
    choices = {
        "model.positions": POSITIONS, "model.norm": NORMS, "model.mlp": MLPS,
        "model.attention": ATTENTION_BACKENDS, "model.rope_scaling": ROPE_SCALINGS,
        "model.parametrization": PARAMETRIZATIONS, "model.dropout_rng": DROPOUT_RNGS,
        "model.dtype": ("float32", "bfloat16", "float16"),
        "model.param_dtype": ("float32", "bfloat16"),
        "optim.name": OPTIMIZERS, "optim.schedule": SCHEDULES, "optim.decay_shape": DECAY_SHAPES,
        "train.nonfinite": ("error", "skip"),
        "train.on_hang": ("exit", "report", "off"),
        "train.on_save_error": ("stop", "continue"),
        "train.host_allocator": HOST_ALLOCATORS,
    }
    for field, allowed in choices.items():
        group, leaf = field.split(".")
        if cfg[group][leaf] not in allowed:
            raise ConfigError(f"{field}={cfg[group][leaf]!r}: must be one of {', '.join(allowed)}")
    for name in cfg.metrics.writers:
        if name not in WRITERS:
            raise ConfigError(f"metrics.writers: {name!r} is not a writer; use names from "
                              f"{', '.join(WRITERS)}")
    check_writer_packages(cfg.metrics.writers)
    if m.remat_policy not in ("none", "full"):
        import jax
        if not hasattr(jax.checkpoint_policies, m.remat_policy):
            raise ConfigError(f"model.remat_policy={m.remat_policy!r}: use none, full or a "
                              "jax.checkpoint_policies name such as dots_saveable")
    kv = m.num_kv_heads or m.num_heads
    if m.head_dim == 0 and m.d_model % m.num_heads:
        raise ConfigError(f"model.d_model={m.d_model}: not divisible by model.num_heads="
                          f"{m.num_heads}; pick d_model a multiple of num_heads or set head_dim")
    if m.num_heads % kv:
        raise ConfigError(f"model.num_heads={m.num_heads}: not a multiple of model.num_kv_heads="
                          f"{kv}; num_kv_heads must divide num_heads")
    if m.positions == "rope" and (m.head_dim or m.d_model // m.num_heads) % 2:
        raise ConfigError("model.positions='rope' needs an even head dimension")
    _validate_attention_features(m)
    if t.seq_len > m.max_seq_len:
        raise ConfigError(f"train.seq_len={t.seq_len}: longer than model.max_seq_len="
                          f"{m.max_seq_len}; lower seq_len or raise max_seq_len")
    if t.batch_size % o.grad_accum_steps:
        raise ConfigError(f"train.batch_size={t.batch_size}: not divisible by "
                          f"optim.grad_accum_steps={o.grad_accum_steps}")
    if not 0 <= m.dropout < 1:
        raise ConfigError(f"model.dropout={m.dropout}: must be in [0, 1)")
    if m.z_loss < 0:
        raise ConfigError(f"model.z_loss={m.z_loss}: must be >= 0")
    if m.dropout > 0 and m.attention not in DROPOUT_BACKENDS:
        raise ConfigError(f"model.dropout with model.attention={m.attention!r}: that backend has "
                          "no dropout on attention probabilities; use "
                          + " or ".join(DROPOUT_BACKENDS))
    if m.parametrization == "mup" and m.mup_base_width <= 0:
        raise ConfigError(f"model.mup_base_width={m.mup_base_width}: must be > 0 (the d_model "
                          "whose tuned hyperparameters transfer)")
    if m.mlp == "moe":
        _validate_moe(m)
    _validate_schedule(cfg)
    _validate_mesh(cfg, num_devices)
    _validate_data(cfg)


def _validate_moe(m):
    e = m.moe
    if e.num_experts < 1 or not 1 <= e.top_k <= e.num_experts:
        raise ConfigError(f"model.moe.top_k={e.top_k}, model.moe.num_experts={e.num_experts}: "
                          "need 1 <= top_k <= num_experts")
    if e.dispatch not in DISPATCH:
        raise ConfigError(f"model.moe.dispatch={e.dispatch!r}: must be one of "
                          f"{', '.join(DISPATCH)}")
    if e.expert_parallel not in EXPERT_PARALLEL:
        raise ConfigError(f"model.moe.expert_parallel={e.expert_parallel!r}: must be one of "
                          f"{', '.join(EXPERT_PARALLEL)}")
    for field in ("d_ff", "shared_d_ff", "aux_loss_coef", "z_loss_coef"):
        if e[field] < 0:
            raise ConfigError(f"model.moe.{field}={e[field]}: must be >= 0")
    if e.capacity_factor <= 0:
        raise ConfigError(f"model.moe.capacity_factor={e.capacity_factor}: must be > 0")
    if e.every < 1 or e.every > m.num_layers:
        raise ConfigError(f"model.moe.every={e.every}: must be between 1 and model.num_layers="
                          f"{m.num_layers}")
    if e.every > 1 and m.scan_layers:
        raise ConfigError(f"model.moe.every={e.every}: mixes MoE and dense layers, which a scan "
                          "over identical layers cannot; set model.scan_layers=False or every=1")


def _validate_attention_features(m):
    for field in ("rope_theta", "rope_scaling_factor", "rope_original_max_seq_len"):
        if m[field] <= 0:
            raise ConfigError(f"model.{field}={m[field]}: must be > 0")
    if m.rope_scaling == "llama3" and m.rope_high_freq_factor <= m.rope_low_freq_factor:
        raise ConfigError(f"model.rope_high_freq_factor={m.rope_high_freq_factor}: must exceed "
                          f"model.rope_low_freq_factor={m.rope_low_freq_factor} for llama3 "
                          "RoPE scaling")
    for field in ("rope_local_theta", "query_pre_attn_scalar", "attn_logit_softcap",
                  "final_logit_softcap", "sliding_window"):
        if m[field] < 0:
            raise ConfigError(f"model.{field}={m[field]}: must be >= 0 (0 = off)")
    if m.attn_logit_softcap and m.attention not in SOFTCAP_BACKENDS:
        raise ConfigError(f"model.attn_logit_softcap={m.attn_logit_softcap}: the "
                          f"{m.attention!r} backend cannot soft-cap scores; use model.attention="
                          f"{' or '.join(SOFTCAP_BACKENDS)}")
    pattern = m.local_layers
    if pattern not in ("all", "alternate") and (
            len(pattern) != m.num_layers or set(pattern) - {"L", "G"}):
        raise ConfigError(f"model.local_layers={pattern!r}: use all, alternate, or one letter "
                          f"per layer ({m.num_layers}), L for local and G for global")


def _validate_schedule(cfg):
    o = cfg.optim
    if not 0 < o.decay_fraction <= 1:
        raise ConfigError(f"optim.decay_fraction={o.decay_fraction}: must be in (0, 1]")
    if o.decay_start < 0:
        raise ConfigError(f"optim.decay_start={o.decay_start}: must be >= 0 (0 = use "
                          "optim.decay_fraction)")
    if o.schedule == "wsd" and o.decay_start:
        end = horizon(o, cfg.train.steps)
        if not o.warmup_steps <= o.decay_start < end:
            raise ConfigError(f"optim.decay_start={o.decay_start}: must lie in [optim.warmup_steps"
                              f"={o.warmup_steps}, {end}) (the schedule's horizon, optim."
                              "decay_steps or train.steps)")


def _validate_mesh(cfg, num_devices):
    if num_devices is None:
        import jax
        num_devices = jax.device_count()
    sizes = mesh_shape(cfg, num_devices)
    m, t = cfg.model, cfg.train
    batch_shards = math.prod(sizes[a] for a in BATCH_AXES)
    batch_names = "*".join("mesh." + a for a in BATCH_AXES)
    if t.batch_size % batch_shards:
        raise ConfigError(f"train.batch_size={t.batch_size}: not divisible by {batch_names}"
                          f"={batch_shards}; use a multiple of {batch_shards}")
    if (t.batch_size // cfg.optim.grad_accum_steps) % batch_shards:
        raise ConfigError(f"train.batch_size/optim.grad_accum_steps = "
                          f"{t.batch_size // cfg.optim.grad_accum_steps}: not divisible by "
                          f"{batch_names}={batch_shards}")
    tensor = sizes["tensor"]
    for field, value in (("num_heads", m.num_heads), ("num_kv_heads", m.num_kv_heads or m.num_heads),
                         ("d_ff", m.d_ff), ("vocab_size", m.vocab_size)):
        if value % tensor:
            raise ConfigError(f"model.{field}={value}: not divisible by mesh.tensor={tensor}; "
                              f"use a multiple of {tensor} or a smaller tensor axis")
    if m.mlp == "moe":
        expert, e = sizes["expert"], m.moe
        if e.num_experts % expert:
            raise ConfigError(f"model.moe.num_experts={e.num_experts}: not divisible by "
                              f"mesh.expert={expert}; use a multiple of {expert} experts or a "
                              "smaller expert axis")
        for field, value in (("moe.d_ff", e.d_ff or m.d_ff), ("moe.shared_d_ff", e.shared_d_ff)):
            if value % tensor:
                raise ConfigError(f"model.{field}={value}: not divisible by mesh.tensor="
                                  f"{tensor}; use a multiple of {tensor}")
    if m.d_model % sizes["fsdp"]:
        raise ConfigError(f"model.d_model={m.d_model}: not divisible by mesh.fsdp="
                          f"{sizes['fsdp']}; use a multiple of {sizes['fsdp']}")


def _validate_data(cfg):
    d = cfg.data
    if d.window_stride < 0 or d.prefetch < 0:
        raise ConfigError(f"data.window_stride={d.window_stride}, data.prefetch={d.prefetch}: "
                          "must be >= 0")
    if d.mixture:
        _validate_mixture(d.mixture)
        return
    path = d.path
    if not path:
        return
    if not (os.path.exists(path) or glob.glob(path)):
        raise ConfigError(f"data.path={path!r}: no such file or directory; point it at a text "
                          "file, a glob, or a directory written by lmjax-prepare")
    # Raw text is prepared on first use: prepare's own checks, naming the data.* fields.
    try:
        data.check_settings(cfg)
    except ConfigError:
        raise
    except UsageError as e:
        raise ConfigError(str(e)) from None


def _validate_mixture(mixture):
    from lmjax.data import store
    for entry in mixture:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2
                and isinstance(entry[0], str) and isinstance(entry[1], (int, float))):
            raise ConfigError(f"data.mixture: {entry!r} is not a (directory, weight) pair; write "
                              "data.mixture=(('DIR_A', 0.7), ('DIR_B', 0.3))")
        directory, weight = entry
        if weight <= 0:
            raise ConfigError(f"data.mixture: {directory!r} has weight {weight}; every weight "
                              "must be > 0 (drop the source instead)")
        if not store.is_complete(directory):
            raise ConfigError(f"data.mixture: {directory!r} is not a directory written by "
                              "lmjax-prepare (no metadata.json); prepare each source first")
    fingerprints = {d: store.read_metadata(d)["tokenizer"]["fingerprint"] for d, _ in mixture}
    if len(set(fingerprints.values())) > 1:
        raise ConfigError("data.mixture: the sources were prepared with different tokenizers ("
                          + ", ".join(f"{d}: {f[:12]}" for d, f in fingerprints.items())
                          + "); prepare every source with one tokenizer")


def to_dict(cfg) -> dict:
    return cfg.to_dict()


