"""init_from=checkpoint:DIR@STEP: a WSD cooldown branched from a stable-phase checkpoint logs the
losses of a run trained with that schedule from the start (bit for bit on one device, within
float tolerance on 8); a missing step is a one-line error before anything runs."""
import pytest

import checkpoint_helpers as h

# Whole training runs; the WSD schedule and branch planning are checked fast in test_optim and
# test_wsd_study.
pytestmark = pytest.mark.slow

STABLE = dict(optim__schedule="constant", train__steps=6, train__checkpoint_every=3)
DECAYED = dict(optim__schedule="wsd", optim__decay_start=6, train__steps=10,
               train__checkpoint_every=5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("branch")
    reference, stable = str(root / "reference"), str(root / "stable")
    h.train(reference, **DECAYED)
    h.train(stable, **STABLE)
    assert h.checkpoint_steps(stable) == [3, 6]
    return root, h.losses(reference), stable


def test_branch_continues_the_stable_run_exactly(runs, tmp_path):
    root, reference, stable = runs
    branch = str(tmp_path / "branch")
    result = h.train(branch, init_from=f"checkpoint:{stable}@6", **DECAYED)
    assert f"branched from step 6 of {stable}" in result.stdout
    losses = h.losses(branch)
    assert sorted(losses) == [7, 8, 9, 10]
    assert losses == {s: reference[s] for s in losses}
    # The stable run's own losses are the reference's up to the branch point.
    assert h.losses(stable) == {s: reference[s] for s in range(1, 7)}
    # Re-running the branch resumes from its own checkpoint, not the source's.
    rerun = h.train(branch, init_from=f"checkpoint:{stable}@6", **DECAYED)
    assert "already reaches" in rerun.stdout


def test_missing_branch_step_is_one_line_exit_2(runs, tmp_path):
    _, _, stable = runs
    result = h.train(str(tmp_path / "bad"), check=False, init_from=f"checkpoint:{stable}@5",
                     **DECAYED)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: init_from=checkpoint:{stable}@5: {stable} has no checkpoint at step 5 (steps "
        "there: 3, 6); train it that far with train.checkpoint_every dividing the step, or "
        "branch from one of those"]


@pytest.mark.slow
def test_branch_on_8_devices_matches_one_device(runs, tmp_path):
    _, reference, stable = runs
    branch = str(tmp_path / "branch8")
    h.train(branch, devices=8, init_from=f"checkpoint:{stable}@6", **DECAYED)
    losses = h.losses(branch)
    assert sorted(losses) == [7, 8, 9, 10]
    for step, loss in losses.items():
        assert loss == pytest.approx(reference[step], rel=1e-5), step
