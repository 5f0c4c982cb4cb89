"""The non-finite guard: NaN/Inf stops the run naming the step (default) or skips the update
(train.nonfinite=skip, counted in the metrics); a state holding NaN is never checkpointed."""
import json
import os

import jax
import numpy as np
import pytest

import checkpoint_helpers as h

# A learning rate of 1e30 makes step 1's update overflow, so step 2's loss is not finite.
EXPLODE = dict(optim__lr=1e30, optim__min_lr=0.0, optim__warmup_steps=0,
               optim__schedule="constant", train__steps=4, train__checkpoint_every=1)


def test_error_mode_names_the_step_in_one_line_and_saves_nothing_bad(tmp_path):
    workdir = str(tmp_path / "run")
    result = h.train(workdir, check=False, **EXPLODE)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = h.error_lines(result.stderr)
    assert len(errors) == 1 and "non-finite loss or gradient norm at step 2" in errors[0], errors
    assert h.checkpoint_steps(workdir) == [1]


@pytest.mark.slow
def test_skip_mode_keeps_the_last_good_state_and_counts_skips(tmp_path):
    from lmjax.infer.restore import load_train_state
    workdir = str(tmp_path / "run")
    h.train(workdir, train__nonfinite="skip", train__keep_checkpoints=4, **EXPLODE)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        last = [json.loads(line) for line in f][-1]
    assert last["step"] == 4 and last["skipped_steps"] == 3
    _, _, first = load_train_state(workdir, step=1)
    _, _, final = load_train_state(workdir, step=4)
    # Skipped updates change nothing: parameters, moments and Adam's update count are step 1's.
    for a, b in zip(jax.tree.leaves((first.params, first.opt_state)),
                    jax.tree.leaves((final.params, final.opt_state))):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    counts = [int(x) for p, x in jax.tree_util.tree_flatten_with_path(final.opt_state)[0]
              if "count" in jax.tree_util.keystr(p)]
    assert counts and set(counts) == {1}
    assert int(final.step) == 4


def test_nan_parameter_is_never_checkpointed(tmp_path, monkeypatch):
    from lmjax.train import checkpoint, state as state_lib, loop as train_lib
    from lmjax import config as config_lib
    cfg = config_lib.load_config(h.EXPERIMENT)
    config_lib.apply_overrides(cfg, {**h.TINY, "train.steps": 3, "train.checkpoint_every": 1,
                                     "train.nonfinite": "skip"})
    init = state_lib.init_state

    def init_with_nan(*args, **kwargs):
        state = init(*args, **kwargs)
        params = jax.tree.map(lambda x: x, state.params)
        params["final_norm"]["scale"] = params["final_norm"]["scale"].at[0].set(np.nan)
        return state.replace(params=params)

    monkeypatch.setattr(train_lib.step_lib.state_lib, "init_state", init_with_nan)
    workdir = str(tmp_path / "run")
    with pytest.raises(checkpoint.NonFiniteCheckpointError, match="at step 1 holds NaN"):
        train_lib.train(cfg, workdir)
    assert h.checkpoint_steps(workdir) == []


def test_the_finiteness_check_compiles_once_per_state_layout():
    # Every save checks the state; a check traced afresh each time cost ~0.4 s per save.
    from lmjax.train import checkpoint
    state = {"w": np.ones((4, 3), np.float32), "b": np.zeros((3,), np.float32),
             "count": np.int32(1)}
    before = checkpoint._leaves_finite._cache_size()
    assert checkpoint.all_finite(state)
    state["w"][1, 2] = np.inf
    assert not checkpoint.all_finite(state)
    assert checkpoint._leaves_finite._cache_size() == before + 1
