"""`lmjax-export`: a training checkpoint -> parameters only, the format inference reads.

The output directory is written under a temporary name and renamed when complete, so a failed
or interrupted export never leaves something that looks finished; the workdir is only read.
"""
import json
import os
import shutil

import jax
import orbax.checkpoint as ocp

import lmjax
from lmjax.train import checkpoint
from lmjax import config as config_lib
from lmjax.parallel import mesh as mesh_lib
from lmjax.parallel import shardings as sharding
from lmjax.infer import restore
from lmjax.train import state as state_lib
from lmjax.errors import UsageError


def check_output(output: str):
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise UsageError(f"--output={output}: already exists and is not an empty directory; "
                         "pick a new --output (nothing was changed)")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise UsageError(f"--output={output}: cannot create it in {parent}; pick a writable place")


def export(workdir: str, output: str, step: int | None = None, log=print) -> dict:
    """Writes OUTPUT/{params/, config.json, tokenizer/, export.json}; returns export.json's dict."""
    check_output(output)
    cfg = restore.load_config(workdir)
    tokenizer_from = restore.tokenizer_dir(cfg, workdir)
    try:  # shard as in training when the devices allow it, else replicate
        mesh_lib.mesh_shape(cfg, jax.device_count())
    except config_lib.ConfigError:
        with cfg.unlocked():
            cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = -1, 1, 1
    cfg, step, state = restore.load_train_state(workdir, step, cfg=cfg)
    params = state.params
    del state
    tmp = os.path.abspath(output).rstrip("/") + ".lmjax-export-tmp"
    if jax.process_index() == 0 and os.path.exists(tmp):
        shutil.rmtree(tmp)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(tmp, restore.PARAMS_DIR), params)
        checkpointer.wait_until_finished()
    info = {"step": int(step), "source": os.path.abspath(workdir),
            "lmjax_version": lmjax.__version__, "num_params": state_lib.count_params(params),
            "mesh": mesh_lib.describe(mesh_lib.make_mesh(cfg))}
    if jax.process_index() == 0:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(checkpoint.dump_config(cfg.to_dict()), f, indent=1)
        os.makedirs(os.path.join(tmp, restore.TOKENIZER_DIR))
        for name in os.listdir(tokenizer_from):
            if name.startswith("tokenizer."):
                shutil.copy2(os.path.join(tokenizer_from, name),
                             os.path.join(tmp, restore.TOKENIZER_DIR, name))
        with open(os.path.join(tmp, restore.EXPORT_FILE), "w") as f:
            json.dump(info, f, indent=1)
        if os.path.isdir(output):
            os.rmdir(output)  # empty, checked above
        os.replace(tmp, output)
        log(f"exported step {step} of {workdir} ({info['num_params']:,} parameters) to {output}")
    return info
