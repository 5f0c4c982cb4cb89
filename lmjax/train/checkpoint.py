"""Checkpoints on orbax's CheckpointManager: train state + data iterator position + config.

A step directory WORKDIR/checkpoints/<step>/ holds three items and step metadata:
  state   the TrainState (orbax StandardSave: each process writes its own shards)
  data    {"process_count": n, "states": [state of process 0, ..., process n-1]} (JSON)
  config  the run's config (JSON)
  custom metadata: step, tokens_seen, wall_time, lmjax_version, process_count.

Orbax writes a step into a temporary directory and renames it when every item is complete, so a
save killed half-way never shows up as a step; deletions of old steps (keep the last
train.keep_checkpoints, and every train.keep_every-th for good) run only after the new step has
been committed. Restoring walks back from the newest step past any that cannot be read.
"""
import json
import os
import re
import time

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

import lmjax
from lmjax import io
from lmjax.errors import NonFiniteError, UsageError
from lmjax.train import barriers

STATE, DATA, CONFIG = "state", "data", "config"
ITEMS = (STATE, DATA, CONFIG)
QUARANTINE = "checkpoints_unreadable"


class NonFiniteCheckpointError(NonFiniteError):
    """The state about to be saved holds NaN or Inf; nothing was written."""


def checkpoint_dir(workdir: str) -> str:
    if io.is_remote(workdir):  # gs:// and other object stores: orbax reads and writes them directly
        return workdir.rstrip("/") + "/checkpoints"
    return os.path.abspath(os.path.join(workdir, "checkpoints"))


def make_manager(workdir: str, train_cfg=None, read_only: bool = False,
                 timeout_s: int | None = None) -> ocp.CheckpointManager:
    """The run's manager: keep the last `keep_checkpoints` steps and every `keep_every`-th.

    Saves are asynchronous; the loop decides when to save, so the manager never second-guesses
    a step it is handed.
    """
    keep = []
    if timeout_s is None:  # the async commit is bounded like every other barrier
        timeout_s = train_cfg.barrier_timeout_s if train_cfg is not None else 1200
    if train_cfg is not None:
        keep.append(policies.LatestN(n=max(1, train_cfg.keep_checkpoints)))
        if train_cfg.keep_every:
            keep.append(policies.EveryNSteps(interval_steps=train_cfg.keep_every))
    preservation = policies.AnyPreservationPolicy(keep) if keep else policies.LatestN(n=None)
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation,
        enable_async_checkpointing=True,
        async_options=ocp.options.AsyncOptions(timeout_secs=timeout_s),
        # Readers never create the directory; orbax's own read_only mode only adds log noise.
        create=not read_only,
        # Half-written steps from a killed save are left for inspection, never listed as steps.
        cleanup_tmp_directories=False,
    )
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 handler_registry=_handler_registry())


def _handler_registry():
    # Registered up front so metadata can be read before any save or restore.
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add(STATE, ocp.args.StandardSave, ocp.StandardCheckpointHandler)
    registry.add(STATE, ocp.args.StandardRestore, ocp.StandardCheckpointHandler)
    for item in (DATA, CONFIG):
        registry.add(item, ocp.args.JsonSave, ocp.JsonCheckpointHandler)
        registry.add(item, ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
    return registry


def all_finite(tree) -> bool:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    if not leaves:
        return True
    return bool(_leaves_finite(leaves))


@jax.jit  # one jit object, so every save after the first reuses its compiled check
def _leaves_finite(leaves):
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


def gather_data_states(local_state: dict, step: int = 0) -> list:
    """Every process's data iterator state, in process order, on every process.

    Exchanged through the distributed key-value store, so a process that never arrives ends
    the wait after train.barrier_timeout_s with its number, instead of hanging a collective.
    """
    if jax.process_count() == 1:
        return [local_state]
    return barriers.exchange(f"lmjax_data_state/{step}", json.dumps(local_state),
                             f"checkpoint save of step {step}", step, decode=json.loads)


def save(manager: ocp.CheckpointManager, step: int, state, data_state: dict, config: dict,
         tokens_seen: int, force: bool = True) -> bool:
    """Starts an asynchronous save of `state` at `step`; every process must call it.

    Raises NonFiniteCheckpointError, writing nothing, if the state holds NaN or Inf.
    """
    if not all_finite((state.params, state.opt_state)):
        manager.wait_until_finished()  # the last good save completes
        raise NonFiniteCheckpointError(
            f"the train state at step {step} holds NaN or Inf values; no checkpoint was written "
            "(the newest good one is kept). Lower optim.lr or check the initial parameters")
    states = gather_data_states(data_state, step)
    metadata = {"step": int(step), "tokens_seen": int(tokens_seen), "wall_time": time.time(),
                "lmjax_version": lmjax.__version__, "process_count": jax.process_count()}
    return manager.save(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(state),
        DATA: ocp.args.JsonSave({"process_count": jax.process_count(), "states": states}),
        CONFIG: ocp.args.JsonSave(config),
    }), custom_metadata=metadata, force=force)


def step_metadata(manager: ocp.CheckpointManager, step: int) -> dict:
    return dict(manager.metadata(step).custom_metadata or {})


def _leaf_name(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _saved_shapes(manager, step) -> dict:
    """{'params/blocks_0/...': shape} of the saved state, read from metadata only."""
    meta = manager.item_metadata(step)[STATE]
    tree = getattr(meta, "tree", meta)
    is_leaf = lambda x: hasattr(x, "shape") and hasattr(x, "dtype")
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
    return {_leaf_name(p): tuple(leaf.shape) for p, leaf in flat if is_leaf(leaf)}


def check_compatible(manager, step: int, abstract_state):
    """UsageError naming every leaf whose shape (or presence) differs from the model's."""
    saved = _saved_shapes(manager, step)
    if not saved:  # metadata lost: the step is unreadable, not a different model
        raise FileNotFoundError(f"no array metadata under {manager.directory / str(step)}")
    wanted = {_leaf_name(p): tuple(leaf.shape)
              for p, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
    problems = []
    # Parameters first: they say what changed; optimizer moments only repeat them.
    for name in sorted(set(saved) | set(wanted), key=lambda n: (not n.startswith("params"), n)):
        if name not in saved:
            problems.append(f"{name} {wanted[name]} is missing from the checkpoint")
        elif name not in wanted:
            problems.append(f"{name} {saved[name]} is in the checkpoint but not in the model")
        elif saved[name] != wanted[name]:
            problems.append(f"{name}: checkpoint {saved[name]} vs model {wanted[name]}")
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more"
                                            if len(problems) > 4 else "")
        raise UsageError(f"checkpoint {manager.directory / str(step)} does not fit this model "
                         f"(or optimizer): {shown}. Use the config it was trained with, or "
                         "another --workdir")


def restore_step(manager, step: int, abstract_state):
    """(state, data item) of one step, each shard read straight onto the device that owns it."""
    restored = manager.restore(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardRestore(abstract_state),
        DATA: ocp.args.JsonRestore(),
    }))
    return restored[STATE], restored[DATA]


def local_data_state(data_item: dict, what: str):
    """This process's iterator state out of the saved per-process list.

    With the same process count each process takes its own entry; with another count the
    states must agree (a position that depends only on the step), since the rows each process
    reads are re-assigned.
    """
    states = data_item.get("states") if isinstance(data_item, dict) else None
    if states is None:  # a single state saved without the per-process list
        return data_item
    if len(states) == jax.process_count():
        return states[jax.process_index()]
    if all(s == states[0] for s in states):
        return states[0]
    raise UsageError(f"{what}: saved by {len(states)} processes whose data positions differ; "
                     f"restore it with {len(states)} processes")


def _quarantine(manager, steps, reasons):
    """Moves unreadable steps out of the way, so the run can save those steps again."""
    target_root = epath.Path(manager.directory).parent / QUARANTINE
    if jax.process_index() == 0:
        for step, reason in zip(steps, reasons):
            source = epath.Path(manager.directory) / str(step)
            if not source.is_dir():
                continue
            target = target_root / f"{step}-{int(time.time())}"
            io.move(source, target)
            io.write_text(target / "WHY.txt", reason + "\n")
    barriers.barrier("lmjax_quarantine", "moving unreadable checkpoints aside")
    manager.reload()
    return str(target_root)


def restore_latest(manager, abstract_state, warn=print):
    """(step, state, data item) of the newest readable checkpoint, or None when there is none.

    A step that cannot be read (killed mid-save, truncated or missing files) is reported by
    `warn` and the next older step is tried; once one restores, the unreadable newer ones move
    to WORKDIR/checkpoints_unreadable/ (kept for inspection, out of the way of new saves). A step
    that does not fit the model is a UsageError: no fallback hides that. When no step is
    readable nothing is moved and the UsageError lists why.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    for name in sorted(os.listdir(manager.directory)) if manager.directory.exists() else ():
        match = re.match(r"(\d+)\.orbax-checkpoint-tmp", name)
        if match and int(match.group(1)) > (steps[0] if steps else -1):
            warn(f"warning: the save of step {match.group(1)} never completed "
                 f"({manager.directory / name} is left for inspection); ignoring it")
    bad_steps, reasons = [], []
    for step in steps:
        where = manager.directory / str(step)
        try:
            check_compatible(manager, step, abstract_state)
            state, data_item = restore_step(manager, step, abstract_state)
        except UsageError:
            raise
        except Exception as e:  # orbax and tensorstore raise many types for unreadable files
            text = str(e).strip().splitlines()[0] if str(e).strip() else ""
            reason = f"{type(e).__name__}: {text}"[:300]
            bad_steps.append(step)
            reasons.append(reason)
            warn(f"warning: checkpoint {where} is unreadable ({reason}); trying an older one")
            continue
        if bad_steps:
            moved_to = _quarantine(manager, bad_steps, reasons)
            warn(f"warning: resuming from {where}, the newest readable checkpoint; the unreadable "
                 f"step(s) {', '.join(map(str, bad_steps))} were moved to {moved_to}")
        return step, state, data_item
    if bad_steps:
        details = "; ".join(f"step {s}: {r}" for s, r in zip(bad_steps, reasons))
        raise UsageError(f"no readable checkpoint in {manager.directory} ({details}); move the "
                         "directory away to start afresh")
    return None


def dump_config(config_dict: dict) -> dict:
    """JSON-safe copy of the config (tuples become lists)."""
    return json.loads(json.dumps(config_dict, default=str))
