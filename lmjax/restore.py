"""Loading a finished or running training run for sampling, evaluation and export."""
import dataclasses
import json
import os

import jax

from lmjax import checkpoint, config as config_lib, sharding
from lmjax import state as state_lib
from lmjax.data.tokenizer import Tokenizer, load_tokenizer
from lmjax.errors import UsageError
from lmjax.model import build_model
from lmjax.optim import make_optimizer


@dataclasses.dataclass
class Run:
    cfg: object
    model: object
    params: object
    tokenizer: Tokenizer
    step: int


def load_config(workdir: str):
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise UsageError(f"--workdir={workdir}: no config.json; is this a lmjax training workdir?")
    with open(path) as f:
        return config_lib.from_dict(json.load(f))


def load_run(workdir: str, step: int | None = None) -> Run:
    """Params of the latest (or given) checkpoint, placed on this process's devices."""
    cfg = load_config(workdir)
    # Inference replicates parameters over whatever devices are here, whatever mesh trained them.
    with cfg.unlocked():
        cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = -1, 1, 1
    manager = checkpoint.make_manager(workdir, cfg.train)
    steps = manager.all_steps()
    if not steps:
        raise UsageError(f"--workdir={workdir}: holds no checkpoint yet")
    if step is None:
        step = max(steps)
    elif step not in steps:
        raise UsageError(f"--step={step}: no such checkpoint in {workdir}; steps there: "
                         f"{', '.join(map(str, sorted(steps)))}")
    model, tx = build_model(cfg.model), make_optimizer(cfg)
    mesh = sharding.make_mesh(cfg)
    rules = sharding.rules(cfg)
    with jax.set_mesh(mesh):
        shardings = state_lib.state_shardings(model, tx, cfg, mesh, rules)
        abstract = state_lib.abstract_state(model, tx, cfg, shardings)
        state, _ = checkpoint.restore(manager, step, abstract)
    manager.close()
    tokenizer = load_tokenizer(os.path.join(workdir, "data"))
    return Run(cfg, model, state.params, tokenizer, step)
