"""A checkpoint written by lmjax 0.1.0 before the package was reorganised still restores, leaf for
leaf, into today's train state (tests/data/checkpoint_v0_1: 3 steps of a tiny shakespeare_char;
state_at_step3.npz holds what that version's own restore read back)."""
import os
import shutil

import jax
import numpy as np

from lmjax.infer.restore import load_train_state
from tests.helpers import REPO

FIXTURE = os.path.join(REPO, "tests", "data", "checkpoint_v0_1")


def test_old_checkpoint_restores_bit_exactly(tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(FIXTURE, workdir)
    cfg, step, state = load_train_state(workdir)
    assert step == 3
    expected = np.load(os.path.join(workdir, "state_at_step3.npz"))
    restored = {jax.tree_util.keystr(p): np.asarray(v)
                for p, v in jax.tree_util.tree_flatten_with_path(state)[0]}
    assert sorted(restored) == sorted(expected.files)
    for name in expected.files:
        np.testing.assert_array_equal(restored[name], expected[name], err_msg=name)
