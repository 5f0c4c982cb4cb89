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

from lmjax.errors import ConfigError, UsageError


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
    # RoPE frequency scaling (lmjax.model.positions.ROPE_SCALINGS): none | linear | llama3
    m.rope_scaling = "none"
    m.rope_scaling_factor = 1.0  # linear, llama3: how far the context is stretched
    m.rope_low_freq_factor = 1.0  # llama3
    m.rope_high_freq_factor = 4.0  # llama3
    m.rope_original_max_seq_len = 8192  # llama3: the context the model was first trained at
    m.rope_local_theta = 0.0  # local layers' RoPE theta, unscaled (0 = as the global layers)
    m.norm = "layernorm"  # layernorm | rmsnorm | gemma_rmsnorm ((1 + weight) scale)
    m.norm_eps = 1e-5
    m.mlp = "gelu"  # gelu (tanh approximation, as GPT-2) | gelu_exact | swiglu | geglu | moe
    m.use_bias = True  # biases on dense layers and LayerNorm
    m.qkv_bias = False  # biases on the q, k, v projections (not the output) whatever use_bias
    m.qk_norm = False  # model.norm over head_dim on queries and keys, before RoPE
    m.query_pre_attn_scalar = 0.0  # scores scaled by this ** -0.5 (0 = head_dim)
    m.attn_logit_softcap = 0.0  # scores -> cap * tanh(scores / cap) (0 = off)
    m.final_logit_softcap = 0.0  # logits -> cap * tanh(logits / cap) (0 = off)
    # Local layers attend to the last sliding_window positions only (0 = every layer global).
    m.sliding_window = 0
    # Which layers are local: all | alternate (even layers) | one letter per layer, L or G
    m.local_layers = "all"
    m.scale_embeddings = False  # token embeddings times sqrt(d_model)
    m.post_norms = False  # also normalise the attention and MLP outputs before the residual
    m.tie_embeddings = True
    m.init_std = 0.02
    # sp | mup (μP: lmjax/model/parametrization.py says what scales with d_model / mup_base_width)
    m.parametrization = "sp"
    m.mup_base_width = 128
    m.scan_layers = False
    m.remat_policy = "none"  # none | full | any jax.checkpoint_policies name
    m.dtype = "float32"  # compute dtype
    m.param_dtype = "float32"
    m.attention = "einsum"  # einsum | blockwise | dot_product (jax.nn.dot_product_attention)
    m.attention_block = 64  # query/key block size of the blockwise backend
    m.mask_documents = False  # stop attention at document boundaries (needs segment ids)
    # Dropout on the embeddings, attention probabilities, attention and MLP outputs (as nanoGPT),
    # in training only; its masks are a pure function of (seed, step, layer).
    m.dropout = 0.0
    m.dropout_rng = "threefry"  # threefry | hash: how masks are drawn (lmjax/model/dropout.py)
    m.z_loss = 0.0  # coefficient of log²Z added to the training loss (PaLM uses 1e-4)
    # Mixture of experts (model.mlp = "moe"): SwiGLU experts, top-k routing (lmjax/model/moe.py).
    m.moe = moe = ml_collections.ConfigDict()
    moe.num_experts = 8
    moe.top_k = 2
    moe.d_ff = 0  # each expert's hidden size; 0 = model.d_ff
    moe.shared_d_ff = 0  # hidden size of a shared expert every token uses (0 = none)
    moe.shared_gate = False  # scale the shared expert by sigmoid(x @ w) (Qwen2-MoE)
    moe.every = 1  # layer i is MoE when (i + 1) % every == 0, else a dense SwiGLU of model.d_ff
    moe.renormalize = True  # top-k probabilities rescaled to sum to 1 (Mixtral; Qwen3 norm_topk_prob)
    moe.dispatch = "dropless"  # a name in lmjax.model.moe.DISPATCH: dropless | capacity
    moe.expert_parallel = "shard_map"  # lmjax.model.moe.EXPERT_PARALLEL: shard_map | constraints
    moe.capacity_factor = 1.25  # capacity mode: slots per expert = factor * tokens * top_k / experts
    moe.aux_loss_coef = 0.01  # load-balancing loss (Switch / Mixtral form)
    moe.z_loss_coef = 0.0  # router z-loss (ST-MoE; 1e-3 there)

    c.train = t = ml_collections.ConfigDict()
    t.steps = 1000
    t.batch_size = 32  # global batch, over all devices and hosts
    t.seq_len = 128
    t.eval_every = 250
    t.eval_steps = 20
    # lm-eval tasks scored during training (lmjax/eval_tasks), comma separated; NAME:N caps one
    # task at N examples. Logged as task/<name>/<metric> every eval_tasks_every steps (0 =
    # at every eval_every) and at the last step.
    t.eval_tasks = ""
    t.eval_tasks_every = 0
    t.log_every = 10
    t.checkpoint_every = 500
    t.keep_checkpoints = 2  # recent checkpoints kept; older ones are deleted
    t.keep_every = 0  # also keep every Nth step permanently (0 = none)
    t.nonfinite = "error"  # error | skip: what a NaN/Inf loss or gradient norm does
    t.sample_tokens = 200  # tokens sampled at the end of training (0 = none)
    t.sample_prompt = "\n"
    t.progress = True
    # system | retain: whether glibc hands freed host memory back to the OS as it goes
    # (lmjax.train.host_memory.HOST_ALLOCATORS); retain can speed small CPU steps, for memory.
    t.host_allocator = "system"
    # XLA's persistent compilation cache (lmjax.train.compile_cache): reruns, resumes and
    # sweep points of the same shapes skip their compiles. "" = none.
    t.compile_cache_dir = "~/.cache/lmjax/xla"
    # XLA compile options of every step the run compiles, "name=value,..." (lmjax.train.
    # xla_options), e.g. xla_backend_optimization_level=1. "" = XLA's defaults.
    t.xla_options = ""
    # A trace of train.profile_steps steps after the first profile_start (lmjax.train.profile):
    # WORKDIR/profile for XProf / TensorBoard and Perfetto, and the ops by time in
    # profile/ops.txt. 0 steps = none. Traced steps run slower; keep evals out of the window.
    t.profile_start = 10
    t.profile_steps = 0
    # Reliability (lmjax.train.watchdog, barriers, saves): see the README's reliability table.
    t.hang_timeout_s = 0.0  # no progress for this long is a hang; 0 = max(10 x median step, 600 s)
    t.hang_compile_timeout_s = 3600.0  # the bound until the first step completes (first compile)
    t.on_hang = "exit"  # exit (code 75, so the job restarts and resumes) | report | off
    t.barrier_timeout_s = 600  # every multi-process barrier, orbax's too, and async-save commits
    t.on_save_error = "stop"  # stop | continue: what a checkpoint save that fails does

    c.optim = o = ml_collections.ConfigDict()
    o.name = "adamw"  # a name in lmjax.train.optim.OPTIMIZERS: adamw | adafactor | lion | muon
    o.lr = 1e-3
    o.min_lr = 1e-4
    o.warmup_steps = 100
    o.decay_steps = 0  # 0 = train.steps
    o.schedule = "cosine"  # a name in lmjax.train.schedules.SCHEDULES: cosine | linear | constant | wsd
    # wsd: the decay starts at decay_start (0 = over the last decay_fraction of the horizon)
    o.decay_fraction = 0.2
    o.decay_start = 0
    o.decay_shape = "linear"  # linear | cosine | 1-sqrt
    o.weight_decay = 0.1
    o.decay_embeddings = False
    o.grad_clip = 1.0  # 0 = no clipping
    o.b1 = 0.9
    o.b2 = 0.95
    o.eps = 1e-8
    o.grad_accum_steps = 1
    # muon: Muon's LR and momentum for the hidden matrices; optim.lr is its AdamW's for the rest
    o.muon_lr = 0.02
    o.muon_beta = 0.95

    c.mesh = ms = ml_collections.ConfigDict()
    ms.data = -1  # -1 = all remaining devices
    ms.fsdp = 1
    ms.tensor = 1
    ms.expert = 1  # expert parallelism: MoE experts are split over this axis, the batch too
    # Logical axis name -> mesh axes. Parameters and activations use distinct names so that
    # FSDP shards weights without sharding activations' feature dimension.
    ms.rules = (
        ("batch", ("data", "expert", "fsdp")),
        ("vocab", "tensor"),
        ("embed", "fsdp"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("mlp", "tensor"),
        ("expert", "expert"),
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
    # Instead of data.path: ((prepared directory, weight), ...) sharing one tokenizer; each global
    # batch draws its rows from the sources in these proportions (lmjax/data/mixture.py).
    d.mixture = ()

    c.metrics = mt = ml_collections.ConfigDict()
    mt.peak_flops_per_device = 0.0  # 0 = from the device kind (measured matmul peak on CPU)
    mt.writers = ("jsonl", "tensorboard")  # names in lmjax.train.metrics.WRITERS
    mt.tensorboard = True  # False drops "tensorboard" from metrics.writers
    # wandb writer: the run's project, name (default: the workdir's name), group and tags
    mt.wandb_project = "lmjax"
    mt.wandb_name = ""
    mt.wandb_group = ""
    mt.wandb_tags = ()
    return c


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/experiment.py[:arg]` by calling its get_config(arg)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"--config: experiment file {path!r} does not exist; "
                          "pass a path such as experiments/shakespeare_char.py")
    module = load_module(path)
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
    check_known_fields(cfg, base_config(), path)
    return cfg


def load_module(path: str):
    module_spec = importlib.util.spec_from_file_location("lmjax_experiment", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"--config: {path} line {e.lineno}: {e.msg}; fix the experiment "
                          "file") from None
    return module


def check_known_fields(cfg, reference, path, prefix=""):
    for key, value in cfg.items():
        name = prefix + key
        if key not in reference:
            raise ConfigError(f"{path}: unknown config field {name!r}; see lmjax/config.py "
                              "for the fields that exist")
        if isinstance(value, ml_collections.ConfigDict):
            check_known_fields(value, reference[key], path, name + ".")


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
