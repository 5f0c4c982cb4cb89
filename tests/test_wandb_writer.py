"""The wandb metrics writer, run offline: the run's files hold the config, the project, name,
group and tags from the config, every logged step, and a resumed run keeps its run id."""
import glob
import json
import os
import struct
import sys

import pytest

from tests import helpers

wandb = pytest.importorskip("wandb")

BLOCK, HEADER = 32768, 7  # the LevelDB log layout of a .wandb file
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path):
    """The protobuf Records of an offline .wandb file, read without wandb's own sync."""
    from wandb.proto import wandb_internal_pb2
    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, payload, records = 7, b"", []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            break
        payload = chunk if kind in (FULL, FIRST) else payload + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            records.append(record)
    return records


def run_config(tmp_path, steps):
    return helpers.tiny_config({
        "metrics.writers": ("jsonl", "wandb"), "metrics.wandb_project": "lmjax-tests",
        "metrics.wandb_group": "sweep-a", "metrics.wandb_tags": ("tiny", "offline"),
        "train.steps": steps, "train.log_every": 1, "train.checkpoint_every": 2,
        "train.eval_steps": 0, "train.sample_tokens": 0, "train.progress": False,
        "model.vocab_size": 65, "data.path": helpers.SHAKESPEARE})


@pytest.mark.slow  # a whole offline wandb run; the writer's other tests are fast
def test_offline_run_holds_config_metrics_and_keeps_its_id_on_resume(tmp_path, monkeypatch):
    from lmjax.train.loop import train
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    workdir = str(tmp_path / "run")
    train(run_config(tmp_path, 2), workdir)
    train(run_config(tmp_path, 3), workdir)  # resumes from step 2

    run_id = open(os.path.join(workdir, "wandb_run_id.txt")).read().strip()
    files = sorted(glob.glob(os.path.join(workdir, "wandb", "offline-run-*", "*.wandb")))
    assert len(files) == 2 and all(f.endswith(f"run-{run_id}.wandb") for f in files)
    history, runs = [], []
    for path in files:
        for record in read_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                history.append({item.key or "/".join(item.nested_key):
                                json.loads(item.value_json) for item in record.history.item})
            elif kind == "run":
                runs.append(record.run)
    assert {r.run_id for r in runs} == {run_id}
    first = runs[0]
    assert (first.project, first.display_name, first.run_group) == ("lmjax-tests", "run",
                                                                    "sweep-a")
    assert list(first.tags) == ["tiny", "offline"]
    config = {item.key: json.loads(item.value_json) for item in first.config.update}
    assert config["model"]["d_model"] == 32 and config["metrics"]["wandb_group"] == "sweep-a"
    steps = [h["_step"] for h in history if "train_loss" in h]
    assert steps == [1, 2, 3]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        jsonl = {r["step"]: r["train_loss"] for r in map(json.loads, f)}
    assert {h["_step"]: h["train_loss"] for h in history if "train_loss" in h} == jsonl


def test_selecting_wandb_without_the_package_is_one_config_error(monkeypatch):
    from lmjax import validation
    from lmjax.errors import ConfigError
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now fails
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    cfg = helpers.tiny_config({"metrics.writers": ("jsonl", "wandb")})
    with pytest.raises(ConfigError, match=r"metrics.writers: 'wandb' needs the wandb package"):
        validation.validate(cfg, 1)
