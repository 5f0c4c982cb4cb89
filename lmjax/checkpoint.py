"""Checkpoints on orbax's CheckpointManager: train state + data iterator position + config."""
import json
import os
import time

import orbax.checkpoint as ocp

STATE, DATA, CONFIG = "state", "data", "config"


def make_manager(workdir: str, train_cfg) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=train_cfg.keep_checkpoints,
        keep_period=train_cfg.keep_every or None,
        enable_async_checkpointing=True,
        create=True,
    )
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                 options=options, item_names=(STATE, DATA, CONFIG))


def save(manager: ocp.CheckpointManager, step: int, state, data_state: dict, config: dict,
         tokens_seen: int, force: bool = False) -> bool:
    metadata = {"step": int(step), "tokens_seen": int(tokens_seen), "wall_time": time.time()}
    return manager.save(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(state),
        DATA: ocp.args.JsonSave(data_state),
        CONFIG: ocp.args.JsonSave(config),
    }), custom_metadata=metadata, force=force)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state):
    restored = manager.restore(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardRestore(abstract_state),
        DATA: ocp.args.JsonRestore(),
    }))
    return restored[STATE], restored[DATA]


def dump_config(config_dict: dict) -> dict:
    """JSON-safe copy of the config (tuples become lists)."""
    return json.loads(json.dumps(config_dict, default=str))
