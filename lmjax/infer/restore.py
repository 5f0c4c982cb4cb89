"""Loading parameters for sampling, evaluation and conversion, from a training run or an export.

A training workdir holds WORKDIR/config.json and orbax checkpoints of the whole train state; an
export directory (`lmjax-export`) holds only what inference needs:
  params/        orbax StandardSave of the parameter tree
  config.json    the run's config
  tokenizer/     tokenizer.json (+ the SentencePiece .model it names)
  export.json    {"step", "source", "lmjax_version", "num_params"}
`load_run` reads either, onto whatever devices this process has.
"""
import dataclasses
import os

import jax
import orbax.checkpoint as ocp

from lmjax.train import checkpoint
from lmjax import config as config_lib, io
from lmjax.parallel import mesh as mesh_lib
from lmjax.parallel import shardings as sharding
from lmjax.train import state as state_lib
from lmjax.data.tokenizer import TOKENIZER_FILE, Tokenizer
from lmjax.data.tokenizers import load_tokenizer
from lmjax.errors import UsageError
from lmjax.model import build_model
from lmjax.train.optim import make_optimizer

EXPORT_FILE = "export.json"
PARAMS_DIR = "params"
TOKENIZER_DIR = "tokenizer"


@dataclasses.dataclass
class Run:
    cfg: object
    model: object
    params: object
    tokenizer: Tokenizer
    step: int


def is_export(path: str) -> bool:
    return os.path.isfile(os.path.join(path, EXPORT_FILE))


def load_config(workdir: str):
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise UsageError(f"--workdir={workdir}: no config.json; is this a lmjax training workdir "
                         "or an lmjax-export directory?")
    payload = io.read_json(path)
    try:
        return config_lib.from_dict(payload)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{path}: not an lmjax run config ({type(e).__name__}: {e}); restore "
                         "the file the run wrote") from None


def tokenizer_dir(cfg, workdir: str) -> str:
    """Where a training run's tokenizer lives: WORKDIR/data, or the prepared data.path."""
    for directory in (os.path.join(workdir, "data"), cfg.data.path):
        if directory and os.path.isfile(os.path.join(directory, TOKENIZER_FILE)):
            return directory
    raise UsageError(f"--workdir={workdir}: no {TOKENIZER_FILE} in {workdir}/data or "
                     f"data.path={cfg.data.path!r}")


def _inference_setup(cfg):
    # Inference replicates parameters over whatever devices are here, whatever mesh trained them.
    with cfg.unlocked():
        cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = -1, 1, 1
    model, (tx, _) = build_model(cfg.model), make_optimizer(cfg)
    mesh = mesh_lib.make_mesh(cfg)
    return model, tx, mesh, sharding.rules(cfg)


def pick_step(steps, step, where: str) -> int:
    if not steps:
        raise UsageError(f"--workdir={where}: holds no checkpoint yet")
    if step is None:
        return max(steps)
    if step not in steps:
        raise UsageError(f"--step={step}: no such checkpoint in {where}; steps there: "
                         f"{', '.join(map(str, sorted(steps)))}")
    return step


def load_train_state(workdir: str, step: int | None = None, cfg=None, mesh=None):
    """(cfg, step, TrainState) of a training workdir's checkpoint, sharded as cfg.mesh says."""
    cfg = cfg or load_config(workdir)
    model, (tx, _) = build_model(cfg.model), make_optimizer(cfg)
    mesh = mesh or mesh_lib.make_mesh(cfg)
    manager = checkpoint.make_manager(workdir, read_only=True)
    try:
        step = pick_step(manager.all_steps(), step, workdir)
        with jax.set_mesh(mesh):
            shardings = state_lib.state_shardings(model, tx, cfg, mesh, sharding.rules(cfg))
            abstract = state_lib.abstract_state(model, tx, cfg, shardings)
            checkpoint.check_compatible(manager, step, abstract)
            try:
                state, _ = checkpoint.restore_step(manager, step, abstract)
            except Exception as e:  # unreadable files: name the step, not orbax's internals
                raise UsageError(f"checkpoint {manager.directory / str(step)} is unreadable "
                                 f"({type(e).__name__}); pick another --step") from None
    finally:
        manager.close()
    return cfg, step, state


def load_run(path: str, step: int | None = None) -> Run:
    """Params of a training workdir's latest (or given) checkpoint, or of an export directory."""
    if is_export(path):
        return load_export(path, step)
    cfg = load_config(path)
    model, _, mesh, _ = _inference_setup(cfg)
    cfg, step, state = load_train_state(path, step, cfg=cfg, mesh=mesh)
    return Run(cfg, model, state.params, load_tokenizer(tokenizer_dir(cfg, path)), step)


def load_export(path: str, step: int | None = None) -> Run:
    info = io.read_json(os.path.join(path, EXPORT_FILE))
    if not isinstance(info, dict) or not isinstance(info.get("step"), int):
        raise UsageError(f"{os.path.join(path, EXPORT_FILE)}: holds no export step; export the "
                         "run again with lmjax-export")
    if step is not None and step != info["step"]:
        raise UsageError(f"--step={step}: {path} is an export of step {info['step']} only")
    cfg = load_config(path)
    model, _, mesh, rules = _inference_setup(cfg)
    with jax.set_mesh(mesh):
        boxed = state_lib.abstract_params(model, cfg)
        shardings = sharding.logical_to_sharding(boxed, mesh, rules)
        abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                state_lib.strip_boxes(boxed), shardings)
        with ocp.StandardCheckpointer() as checkpointer:
            params = checkpointer.restore(os.path.abspath(os.path.join(path, PARAMS_DIR)),
                                          abstract)
    tokenizer = load_tokenizer(os.path.join(path, TOKENIZER_DIR))
    return Run(cfg, model, params, tokenizer, info["step"])
