"""Fine-tuning: config field `init_from` = `hf:DIR` or `workdir:DIR` (a training workdir or an
lmjax-export directory) starts training from those weights instead of a random init.

`checkpoint:DIR@STEP` branches: the run starts from the whole train state of training workdir
DIR's checkpoint at STEP (weights, optimizer moments, step count and data position), as if it
resumed that run under this config. A WSD cooldown branches from a stable-phase checkpoint so.

The source fixes the architecture: `adopt_architecture` copies its model fields into the
config before anything is built (and says which changed); compute settings (dtype, scan_layers
for HF sources, remat, attention backend) stay the experiment's. The data must be tokenized with
the source's tokenizer; a different one is refused by name before any step runs.
"""
from lmjax import config as config_lib
from lmjax.config import ConfigError
from lmjax.errors import UsageError
from lmjax.hf import configs, moe

ARCHITECTURE = configs.ARCHITECTURE


def parse(spec: str) -> tuple[str, str]:
    kind, sep, path = spec.partition(":")
    if not sep or kind not in ("hf", "workdir", "checkpoint") or not path:
        raise ConfigError(f"init_from={spec!r}: write hf:DIR (a Hugging Face model directory), "
                          "workdir:DIR (a training workdir or lmjax-export directory) or "
                          "checkpoint:DIR@STEP (a training workdir's checkpoint to branch from)")
    if kind == "checkpoint":
        path = checkpoint_source(spec)[0]
    return kind, path


def checkpoint_source(spec: str) -> tuple[str, int]:
    """(DIR, STEP) of `checkpoint:DIR@STEP`."""
    directory, sep, step = spec.partition(":")[2].rpartition("@")
    if not sep or not directory or not step.isdigit():
        raise ConfigError(f"init_from={spec!r}: write checkpoint:DIR@STEP, e.g. "
                          "checkpoint:runs/stable@1000")
    return directory, int(step)


def check_branch_step(spec: str) -> None:
    """A UsageError, before anything is built, when DIR holds no checkpoint at STEP."""
    import os
    from lmjax.train import checkpoint
    directory, step = checkpoint_source(spec)
    where = checkpoint.checkpoint_dir(directory)
    steps = sorted(int(n) for n in (os.listdir(where) if os.path.isdir(where) else ())
                   if n.isdigit())
    if step not in steps:
        raise UsageError(f"init_from={spec}: {directory} has no checkpoint at step {step} "
                         f"(steps there: {', '.join(map(str, steps)) or 'none'}); train it that "
                         "far with train.checkpoint_every dividing the step, or branch from one "
                         "of those")


def source_model_config(spec: str):
    kind, path = parse(spec)
    if kind == "hf":
        from lmjax.hf.load import hf_model_config
        return hf_model_config(path)[1].model
    from lmjax.infer import restore
    return restore.load_config(path).model


def adopt_architecture(cfg, log=print):
    """Sets cfg.model's architecture fields to the init_from source's; returns cfg."""
    if not cfg.init_from:
        return cfg
    if cfg.init_from.startswith("checkpoint:"):
        check_branch_step(cfg.init_from)
    source = source_model_config(cfg.init_from)
    fields = ARCHITECTURE + (("scan_layers",) if not cfg.init_from.startswith("hf:") else ())
    changes = {}
    for field in fields:
        if cfg.model[field] != source[field]:
            changes[f"model.{field}"] = source[field]
    if source.mlp == "moe":
        for field in moe.ARCHITECTURE:
            if cfg.model.moe[field] != source.moe[field]:
                changes[f"model.moe.{field}"] = source.moe[field]
    if changes:
        log(f"init_from={cfg.init_from}: model set to the source's " +
            ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        config_lib.apply_overrides(cfg, changes)
    return cfg


def initial_params(cfg, mesh, rules, param_shardings, data_tokenizer, log=print):
    """The source's parameters, placed in `param_shardings`; checks the tokenizer first."""
    kind, path = parse(cfg.init_from)
    if kind == "hf":
        from lmjax.data.hf_tokenizer import load_hf_tokenizer
        from lmjax.hf.load import import_params, hf_model_config, read_config
        hf_cfg = read_config(path)
        _check_tokenizer(cfg.init_from, load_hf_tokenizer(path, hf_cfg), data_tokenizer)
        family, _, _ = hf_model_config(path)
        params = import_params(path, cfg, hf_cfg, family, mesh, rules)
    else:
        import jax
        from lmjax.infer import restore
        run = restore.load_run(path)
        _check_tokenizer(cfg.init_from, run.tokenizer, data_tokenizer)
        params = jax.device_put(run.params, param_shardings)
    log(f"initialised from {cfg.init_from}")
    return params


def _check_tokenizer(spec, source, data_tokenizer):
    if source is None or data_tokenizer is None:
        return
    if source.fingerprint() != data_tokenizer.fingerprint():
        raise UsageError(
            f"init_from={spec}: its tokenizer ({source.kind}, vocab {source.vocab_size}) differs "
            f"from the data's ({data_tokenizer.kind}, vocab {data_tokenizer.vocab_size}); "
            "prepare the data with the source's tokenizer (lmjax-prepare --tokenizer_model=...)")
