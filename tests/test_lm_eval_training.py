"""train.eval_tasks: lm-eval task metrics at every eval point, continued by a resumed run, equal
to the lm-eval backend scoring the saved checkpoint afterwards."""
import glob
import json
import os

import pytest

pytest.importorskip("lm_eval", reason="train.eval_tasks needs lm-eval (pip install -e .[test])")

from lmjax.main import train_main  # noqa: E402
from tests import helpers  # noqa: E402
from tests.test_train import SMOKE_OVERRIDES  # noqa: E402

TASK = "lmjax_cloze_shakespeare"
KEY = f"task/{TASK}/acc"


def records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_task_metrics_every_eval_point_and_across_a_resume(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    args = [f"--config={helpers.EXPERIMENT}", f"--workdir={workdir}", *SMOKE_OVERRIDES,
            "--config.train.eval_every=4", "--config.train.checkpoint_every=4",
            "--config.train.log_every=2", "--config.train.eval_steps=1",
            f"--config.train.eval_tasks={TASK}:6", "--config.train.eval_tasks_every=2"]
    train_main(args + ["--config.train.steps=4"])
    first = {r["step"]: r for r in records(workdir) if KEY in r}
    assert sorted(first) == [2, 4]
    train_main(args + ["--config.train.steps=8"])  # resumes from step 4
    assert "resumed from step 4" in capsys.readouterr().out
    logged = {r["step"]: r for r in records(workdir) if KEY in r}
    assert sorted(logged) == [2, 4, 6, 8]
    assert all(logged[s] == first[s] for s in first)  # the resumed run kept the series
    for record in logged.values():
        assert 0 <= record[KEY] <= 1 and record[f"task/{TASK}/perplexity"] > 1
    with open(os.path.join(workdir, "tasks.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    events = glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
    assert any(KEY.encode() in open(e, "rb").read() for e in events)

    # The numbers are the lm-eval backend's on the step-8 checkpoint, scored afresh.
    from lmjax.infer import harness
    from lmjax.infer.lm_eval_backend import LmjaxLM
    lm = LmjaxLM(model=workdir, batch_size=8)
    again = harness.flat_metrics(harness.evaluate(lm, [TASK], harness.task_manager([TASK]), 6))
    assert again[KEY] == logged[8][KEY]
    assert again[f"task/{TASK}/perplexity"] == pytest.approx(
        logged[8][f"task/{TASK}/perplexity"], rel=1e-4)


def test_unknown_eval_task_is_one_line_and_creates_nothing(tmp_path, capsys):
    workdir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_main([f"--config={helpers.EXPERIMENT}", f"--workdir={workdir}", *SMOKE_OVERRIDES,
                    "--config.train.eval_tasks=lmjax_cloze,nope_task"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: train.eval_tasks: --tasks: unknown task 'nope_task'")
    assert not workdir.exists()
