"""Exact resume: a run killed (kill -9) or stopped (SIGTERM) and re-run with the same command logs
bit-for-bit the losses of an uninterrupted run; SIGTERM leaves a checkpoint at the step it stopped."""
import os
import random
import signal

import pytest

import checkpoint_helpers as h

STEPS = 12
RUN = dict(train__steps=STEPS, train__checkpoint_every=4)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Losses of one uninterrupted run: the independent reference every resumed run must match."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    h.train(workdir, **RUN)
    losses = h.losses(workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses


@pytest.mark.slow  # CI's fast set resumes in-process (test_train, test_optimizers)
def test_kill9_then_rerun_matches_uninterrupted_run_bit_for_bit(reference, tmp_path):
    workdir = str(tmp_path / "run")
    kill_after = random.Random().randint(5, 9)
    print(f"kill -9 after step {kill_after}")
    code, _ = h.interrupt_at(workdir, kill_after, h.train_command(workdir, **RUN), signal.SIGKILL)
    assert code == -signal.SIGKILL
    saved = h.checkpoint_steps(workdir)
    assert not saved or max(saved) < STEPS, saved

    result = h.train(workdir, **RUN)
    # On a busy machine the kill can land before the first async save commits; the rerun then
    # starts over, and must still log exactly the reference losses.
    resumed_from = max(saved, default=0)
    if saved:
        assert f"resumed from step {resumed_from}" in result.stdout
    resumed = h.losses(workdir)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    after = {s: l for s, l in resumed.items() if s > resumed_from}
    assert after == {s: reference[s] for s in after}, (after, reference)


@pytest.mark.slow
def test_sigterm_saves_the_step_it_stopped_at_and_resumes_exactly(reference, tmp_path):
    workdir = str(tmp_path / "run")
    stop_after = 5  # between the checkpoints at 4 and 8, so the save is the preemption's own
    code, stderr = h.interrupt_at(workdir, stop_after, h.train_command(workdir, **RUN),
                                  signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, stderr[-2000:]
    stopped = max(h.losses(workdir))
    assert stopped < STEPS
    assert stopped in h.checkpoint_steps(workdir)
    last = stderr.strip().splitlines()[-1]
    assert f"stopped on SIGTERM after step {stopped}" in last and "same command" in last, last

    result = h.train(workdir, **RUN)
    assert f"resumed from step {stopped}" in result.stdout
    resumed = h.losses(workdir)
    assert resumed == reference


@pytest.mark.slow
def test_sigint_behaves_like_sigterm(reference, tmp_path):
    workdir = str(tmp_path / "run")
    code, stderr = h.interrupt_at(workdir, 6, h.train_command(workdir, **RUN), signal.SIGINT)
    assert code == 128 + signal.SIGINT, stderr[-2000:]
    stopped = max(h.losses(workdir))
    assert stopped in h.checkpoint_steps(workdir)
    h.train(workdir, **RUN)
    assert h.losses(workdir) == reference


@pytest.mark.slow
def test_two_interruptions_in_a_row(reference, tmp_path):
    workdir = str(tmp_path / "run")
    command = h.train_command(workdir, **RUN)
    h.interrupt_at(workdir, 3, command, signal.SIGTERM)
    h.interrupt_at(workdir, 9, command, signal.SIGKILL)
    h.train(workdir, **RUN)
    assert h.losses(workdir) == reference
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(STEPS)))


@pytest.mark.slow
def test_kill9_with_dropout_and_muon_matches_uninterrupted_run(tmp_path):
    """Dropout's masks come from (seed, step) inside the step, and Muon's state is checkpointed
    like AdamW's: a kill -9 and rerun still logs the uninterrupted run's losses bit for bit."""
    run = dict(RUN, model__dropout=0.2, optim__name="muon")
    reference_dir = str(tmp_path / "reference")
    h.train(reference_dir, **run)
    reference = h.losses(reference_dir)
    workdir = str(tmp_path / "run")
    code, _ = h.interrupt_at(workdir, 6, h.train_command(workdir, **run), signal.SIGKILL)
    assert code == -signal.SIGKILL
    saved = h.checkpoint_steps(workdir)
    result = h.train(workdir, **run)
    resumed_from = max(saved, default=0)
    if saved:
        assert f"resumed from step {resumed_from}" in result.stdout
    resumed = h.losses(workdir)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert resumed == reference
