"""Experiment configs: defaults for every field, `path[:arg]` loading, overrides, validation.

An experiment file defines `get_config(arg=None)` returning a ConfigDict built on `base_config()`.
Overrides use the ml_collections `--config.FIELD=VALUE` syntax; every value is parsed against the
type of the default, so a typo in a field name or a wrong type fails before anything compiles.
"""
import ast
import importlib.util
import os
from typing import Any, Mapping

import ml_collections

from lmjax.errors import UsageError


class ConfigError(UsageError):
    """A config problem the user can fix; the message is one line naming field, value and fix."""


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # `hf:DIR` or `workdir:DIR` starts from those weights instead of a random init.
    c.init_from = ""

    c.model = m = ml_collections.ConfigDict()
    m.num_layers = 4
    m.d_model = 128
    m.num_heads = 4
    m.num_kv_heads = 0  # 0 = num_heads (MHA); fewer gives GQA, 1 gives MQA
    m.head_dim = 0  # 0 = d_model // num_heads
    m.d_ff = 512
    m.vocab_size = 256
    m.max_seq_len = 256
    m.positions = "learned"  # learned | rope
    m.rope_theta = 10000.0
    m.norm = "layernorm"  # layernorm | rmsnorm
    m.norm_eps = 1e-5
    m.mlp = "gelu"  # gelu (tanh approximation, as GPT-2) | gelu_exact | swiglu
    m.use_bias = True  # biases on dense layers and LayerNorm
    m.tie_embeddings = True
    m.init_std = 0.02
    m.scan_layers = False
    m.remat_policy = "none"  # none | full | any jax.checkpoint_policies name
    m.dtype = "float32"  # compute dtype
    m.param_dtype = "float32"
    m.attention = "einsum"  # einsum | blockwise | dot_product (jax.nn.dot_product_attention)
    m.attention_block = 64  # query/key block size of the blockwise backend
    m.mask_documents = False  # stop attention at document boundaries (needs segment ids)

    c.train = t = ml_collections.ConfigDict()
    t.steps = 1000
    t.batch_size = 32  # global batch, over all devices and hosts
    t.seq_len = 128
    t.eval_every = 250
    t.eval_steps = 20
    t.log_every = 10
    t.checkpoint_every = 500
    t.keep_checkpoints = 2  # recent checkpoints kept; older ones are deleted
    t.keep_every = 0  # also keep every Nth step permanently (0 = none)
    t.nonfinite = "error"  # error | skip: what a NaN/Inf loss or gradient norm does
    t.sample_tokens = 200  # tokens sampled at the end of training (0 = none)
    t.sample_prompt = "\n"
    t.progress = True

    c.optim = o = ml_collections.ConfigDict()
    o.lr = 1e-3
    o.min_lr = 1e-4
    o.warmup_steps = 100
    o.decay_steps = 0  # 0 = train.steps
    o.schedule = "cosine"  # cosine | linear | constant
    o.weight_decay = 0.1
    o.decay_embeddings = False
    o.grad_clip = 1.0  # 0 = no clipping
    o.b1 = 0.9
    o.b2 = 0.95
    o.eps = 1e-8
    o.grad_accum_steps = 1

    c.mesh = ms = ml_collections.ConfigDict()
    ms.data = -1  # -1 = all remaining devices
    ms.fsdp = 1
    ms.tensor = 1
    # Logical axis name -> mesh axes. Parameters and activations use distinct names so that
    # FSDP shards weights without sharding activations' feature dimension.
    ms.rules = (
        ("batch", ("data", "fsdp")),
        ("vocab", "tensor"),
        ("embed", "fsdp"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("mlp", "tensor"),
        ("head_dim", None),
        ("layers", None),
        ("norm", None),
        ("act_len", None),
        ("act_embed", None),
        ("act_heads", "tensor"),
        ("act_kv_heads", "tensor"),
        ("act_mlp", "tensor"),
        ("act_vocab", "tensor"),
    )

    c.data = d = ml_collections.ConfigDict()
    # A text file, a glob of text files, or a directory written by lmjax-prepare.
    d.path = ""
    d.tokenizer = "char"  # char | bytes | sentencepiece (for raw text prepared on first use)
    d.vocab_size = 0  # sentencepiece vocab when raw text is prepared on first use
    d.valid_fraction = 0.1
    d.model_type = "bpe"  # bpe | unigram: the sentencepiece model trained on first use
    d.invalid_utf8 = "error"  # error | replace (each bad byte -> U+FFFD, counted in metadata)
    # Train windows start every window_stride tokens (0 = seq_len: non-overlapping windows, one
    # epoch = one pass over the tokens); 1 gives every offset, like nanoGPT's random windows.
    d.window_stride = 0
    d.prefetch = 2  # batches read ahead in a background thread (0 = read on demand)

    c.metrics = mt = ml_collections.ConfigDict()
    mt.peak_flops_per_device = 0.0  # 0 = from the device kind (measured matmul peak on CPU)
    mt.tensorboard = True
    return c


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/experiment.py[:arg]` by calling its get_config(arg)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"--config: experiment file {path!r} does not exist; "
                          "pass a path such as experiments/shakespeare_char.py")
    module_spec = importlib.util.spec_from_file_location("lmjax_experiment", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"--config: {path} has no get_config(arg=None) function; define one "
                          "that returns lmjax.config.base_config() with your changes")
    try:
        cfg = module.get_config(arg or None)
    except UsageError:
        raise
    except ValueError as e:
        # Experiments reject unknown variants with ValueError: the user's input, not a crash.
        raise ConfigError(f"--config={spec}: {e}") from None
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ConfigError(f"--config: {path}: get_config must return an ml_collections.ConfigDict")
    _check_known_fields(cfg, base_config(), path)
    return cfg


def load_module(path: str):
    module_spec = importlib.util.spec_from_file_location("lmjax_experiment", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _check_known_fields(cfg, reference, path, prefix=""):
    for key, value in cfg.items():
        name = prefix + key
        if key not in reference:
            raise ConfigError(f"{path}: unknown config field {name!r}; see lmjax/config.py "
                              "for the fields that exist")
        if isinstance(value, ml_collections.ConfigDict):
            _check_known_fields(value, reference[key], path, name + ".")


def parse_value(field: str, text: str, current: Any) -> Any:
    """Parses a command-line value to the type of the field's current value."""
    try:
        if isinstance(current, bool):
            lowered = text.lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError
        if isinstance(current, int):
            value = ast.literal_eval(text)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError
            return value
        if isinstance(current, float):
            return float(ast.literal_eval(text))
        if isinstance(current, str):
            return text
        if isinstance(current, (tuple, list)):
            return tuple(ast.literal_eval(text))
    except (ValueError, SyntaxError, TypeError):
        raise ConfigError(f"--config.{field}={text}: expected a value of type "
                          f"{type(current).__name__} (current value {current!r})") from None
    return ast.literal_eval(text)


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any]):
    """Applies {"model.d_model": "64" or 64, ...}; strings are parsed against the field's type."""
    for field, value in overrides.items():
        *parents, leaf = field.split(".")
        node = cfg
        for i, part in enumerate(parents):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise ConfigError(f"--config.{field}: unknown config field "
                                  f"{'.'.join(parents[:i + 1])!r}")
            node = node[part]
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            raise ConfigError(f"--config.{field}: unknown config field {field!r}; "
                              "see lmjax/config.py for the fields that exist")
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise ConfigError(f"--config.{field}: is a group of fields; set one of "
                              f"{', '.join(sorted(current.keys()))}")
        if isinstance(value, str) and not isinstance(current, str):
            value = parse_value(field, value, current)
        elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(current, (tuple, list)) and isinstance(value, list):
            value = tuple(value)
        if current is not None and type(value) is not type(current):
            raise ConfigError(f"--config.{field}={value!r}: expected a value of type "
                              f"{type(current).__name__} (current value {current!r})")
        with node.unlocked():
            node[leaf] = value
    return cfg


def split_overrides(argv):
    """Splits ['--config.a.b=1', '--config.c', '2', ...] into ({'a.b': '1', 'c': '2'}, rest)."""
    overrides, rest = {}, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            key, eq, value = arg[len("--config."):].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{arg}: missing value; write {arg}=VALUE")
                value = argv[i + 1]
                i += 1
            overrides[key] = value
        else:
            rest.append(arg)
        i += 1
    return overrides, rest


def _positive(cfg, field):
    value = cfg
    for part in field.split("."):
        value = value[part]
    if value <= 0:
        raise ConfigError(f"{field}={value}: must be > 0")


def validate(cfg, num_devices: int | None = None):
    """Checks everything that can be checked without compiling; raises ConfigError."""
    _check_known_fields(cfg, base_config(), "config")
    m, t, o = cfg.model, cfg.train, cfg.optim
    for field in ("train.steps", "train.batch_size", "train.seq_len", "optim.lr",
                  "model.num_layers", "model.d_model", "model.num_heads", "model.d_ff",
                  "model.vocab_size", "model.max_seq_len", "train.log_every",
                  "train.eval_every", "train.checkpoint_every", "optim.grad_accum_steps"):
        _positive(cfg, field)
    if t.eval_steps < 0:
        raise ConfigError(f"train.eval_steps={t.eval_steps}: must be >= 0 (0 = no eval)")
    if o.warmup_steps < 0:
        raise ConfigError(f"optim.warmup_steps={o.warmup_steps}: must be >= 0")
    if o.min_lr < 0 or o.min_lr > o.lr:
        raise ConfigError(f"optim.min_lr={o.min_lr}: must lie between 0 and optim.lr={o.lr}")
    choices = {
        "model.positions": ("learned", "rope"), "model.norm": ("layernorm", "rmsnorm"),
        "model.mlp": ("gelu", "gelu_exact", "swiglu"),
        "model.attention": ("einsum", "blockwise", "dot_product"),
        "model.dtype": ("float32", "bfloat16", "float16"),
        "model.param_dtype": ("float32", "bfloat16"),
        "optim.schedule": ("cosine", "linear", "constant"),
        "train.nonfinite": ("error", "skip"),
        "data.tokenizer": ("char", "bytes", "sentencepiece"),
        "data.model_type": ("bpe", "unigram"),
        "data.invalid_utf8": ("error", "replace"),
    }
    for field, allowed in choices.items():
        group, leaf = field.split(".")
        if cfg[group][leaf] not in allowed:
            raise ConfigError(f"{field}={cfg[group][leaf]!r}: must be one of {', '.join(allowed)}")
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
    if t.seq_len > m.max_seq_len:
        raise ConfigError(f"train.seq_len={t.seq_len}: longer than model.max_seq_len="
                          f"{m.max_seq_len}; lower seq_len or raise max_seq_len")
    if t.batch_size % o.grad_accum_steps:
        raise ConfigError(f"train.batch_size={t.batch_size}: not divisible by "
                          f"optim.grad_accum_steps={o.grad_accum_steps}")
    _validate_mesh(cfg, num_devices)
    _validate_data(cfg)


def mesh_shape(cfg, num_devices: int) -> dict:
    """Resolves -1 entries of the mesh config against the device count."""
    ms = cfg.mesh
    sizes = {"data": ms.data, "fsdp": ms.fsdp, "tensor": ms.tensor}
    for axis, size in sizes.items():
        if size == 0 or size < -1:
            raise ConfigError(f"mesh.{axis}={size}: must be a positive size or -1 "
                              "(all remaining devices)")
    free = [axis for axis, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ConfigError(f"mesh: only one axis may be -1, got {', '.join('mesh.' + a for a in free)}")
    known = 1
    for size in sizes.values():
        if size != -1:
            known *= size
    if free:
        if num_devices % known:
            raise ConfigError(f"mesh.{free[0]}=-1: {num_devices} devices are not divisible by "
                              f"the other axes' product {known}")
        sizes[free[0]] = num_devices // known
    product = sizes["data"] * sizes["fsdp"] * sizes["tensor"]
    if product != num_devices:
        raise ConfigError(f"mesh: data*fsdp*tensor = {sizes['data']}*{sizes['fsdp']}*"
                          f"{sizes['tensor']} = {product}, but {num_devices} devices are "
                          f"present; make the product {num_devices} or set one axis to -1")
    return sizes


def _validate_mesh(cfg, num_devices):
    if num_devices is None:
        import jax
        num_devices = jax.device_count()
    sizes = mesh_shape(cfg, num_devices)
    m, t = cfg.model, cfg.train
    batch_shards = sizes["data"] * sizes["fsdp"]
    if t.batch_size % batch_shards:
        raise ConfigError(f"train.batch_size={t.batch_size}: not divisible by mesh.data*mesh.fsdp"
                          f"={batch_shards}; use a multiple of {batch_shards}")
    if (t.batch_size // cfg.optim.grad_accum_steps) % batch_shards:
        raise ConfigError(f"train.batch_size/optim.grad_accum_steps = "
                          f"{t.batch_size // cfg.optim.grad_accum_steps}: not divisible by "
                          f"mesh.data*mesh.fsdp={batch_shards}")
    tensor = sizes["tensor"]
    for field, value in (("num_heads", m.num_heads), ("num_kv_heads", m.num_kv_heads or m.num_heads),
                         ("d_ff", m.d_ff), ("vocab_size", m.vocab_size)):
        if value % tensor:
            raise ConfigError(f"model.{field}={value}: not divisible by mesh.tensor={tensor}; "
                              f"use a multiple of {tensor} or a smaller tensor axis")
    if m.d_model % sizes["fsdp"]:
        raise ConfigError(f"model.d_model={m.d_model}: not divisible by mesh.fsdp="
                          f"{sizes['fsdp']}; use a multiple of {sizes['fsdp']}")


def _validate_data(cfg):
    import glob
    d = cfg.data
    if d.window_stride < 0 or d.prefetch < 0:
        raise ConfigError(f"data.window_stride={d.window_stride}, data.prefetch={d.prefetch}: "
                          "must be >= 0")
    if not 0 <= d.valid_fraction < 1:
        raise ConfigError(f"data.valid_fraction={d.valid_fraction}: must be in [0, 1)")
    path = d.path
    if not path:
        return
    if not (os.path.exists(path) or glob.glob(path)):
        raise ConfigError(f"data.path={path!r}: no such file or directory; point it at a text "
                          "file, a glob, or a directory written by lmjax-prepare")


def to_dict(cfg) -> dict:
    return cfg.to_dict()


def flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix + key + "."))
        else:
            out[prefix + key] = value
    return out


def from_dict(d: Mapping) -> ml_collections.ConfigDict:
    """Rebuilds a config saved as JSON (workdir/config.json) on top of today's defaults."""
    cfg = base_config()
    values = {k: _lists_to_tuples(v) for k, v in flatten(d).items()}
    return apply_overrides(cfg, values)


def _lists_to_tuples(value):
    """JSON turns tuples (e.g. mesh.rules' (name, (axis, axis))) into lists, at every depth."""
    if isinstance(value, list):
        return tuple(_lists_to_tuples(x) for x in value)
    return value
