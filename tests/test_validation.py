"""Every bad input gives one line naming field, value and fix; the CLI exits 2 and writes nothing.

Most cases call config.validate directly (no process start); a handful go through
`python -m lmjax.train` in subprocesses to prove the command-line contract: exactly one stderr
line, no traceback, exit code 2, no workdir, and nothing compiled (JAX_LOG_COMPILES=1 would
print every compilation to stderr).
"""
import os
import subprocess
import sys

import pytest

from lmjax import config as config_lib, validation
from lmjax.config import ConfigError
from tests import helpers

# (overrides, device count, substrings the message must contain: field, value, fix)
CASES = {
    "mesh product": ({"mesh.data": 2, "mesh.fsdp": 2}, 1,
                     ["mesh", "2*1*2*1 = 4", "1 devices", "set one axis to -1"]),
    "mesh product too small": ({"mesh.data": 2}, 8, ["2*1*1*1 = 2", "8 devices"]),
    "mesh free axis": ({"mesh.data": -1, "mesh.fsdp": 3}, 8, ["mesh.data=-1", "3"]),
    "batch vs data*fsdp": ({"train.batch_size": 12, "mesh.data": 2, "mesh.fsdp": 4}, 8,
                           ["train.batch_size=12", "mesh.data*mesh.expert*mesh.fsdp=8",
                            "multiple of 8"]),
    "experts vs expert axis": ({"model.mlp": "moe", "model.moe.num_experts": 6, "mesh.expert": 4,
                                "mesh.data": 2}, 8,
                               ["model.moe.num_experts=6", "mesh.expert=4", "multiple of 4"]),
    "moe top_k": ({"model.mlp": "moe", "model.moe.top_k": 9}, 1,
                  ["model.moe.top_k=9", "top_k <= num_experts"]),
    "moe dispatch": ({"model.mlp": "moe", "model.moe.dispatch": "sinkhorn"}, 1,
                     ["model.moe.dispatch='sinkhorn'", "dropless, capacity"]),
    "moe expert_parallel": ({"model.mlp": "moe", "model.moe.expert_parallel": "all_to_all"}, 1,
                            ["model.moe.expert_parallel='all_to_all'", "shard_map, constraints"]),
    "moe every with scan": ({"model.mlp": "moe", "model.moe.every": 2,
                             "model.scan_layers": True}, 1,
                            ["model.moe.every=2", "model.scan_layers=False"]),
    "heads vs tensor": ({"model.num_heads": 2, "mesh.tensor": 4, "mesh.data": 1}, 4,
                        ["model.num_heads=2", "mesh.tensor=4", "multiple of 4"]),
    "kv heads vs tensor": ({"model.num_kv_heads": 1, "mesh.tensor": 2, "mesh.data": 1}, 2,
                           ["model.num_kv_heads=1", "mesh.tensor=2", "multiple of 2"]),
    "heads vs kv heads": ({"model.num_kv_heads": 3}, 1,
                          ["model.num_heads=4", "num_kv_heads=3", "must divide"]),
    "d_model vs heads": ({"model.d_model": 30}, 1,
                         ["model.d_model=30", "model.num_heads=4", "multiple of num_heads"]),
    "seq_len vs max": ({"train.seq_len": 32}, 1,
                       ["train.seq_len=32", "model.max_seq_len=16", "raise max_seq_len"]),
    "steps": ({"train.steps": 0}, 1, ["train.steps=0", "must be > 0"]),
    "negative lr": ({"optim.lr": -0.1}, 1, ["optim.lr=-0.1", "must be > 0"]),
    "zero lr": ({"optim.lr": 0.0}, 1, ["optim.lr=0.0", "must be > 0"]),
    "batch": ({"train.batch_size": 0}, 1, ["train.batch_size=0", "must be > 0"]),
    "data file": ({"data.path": "/nonexistent/shakespeare.txt"}, 1,
                  ["data.path", "/nonexistent/shakespeare.txt", "point it at a text file"]),
    "choice": ({"model.attention": "flash"}, 1, ["model.attention='flash'", "einsum"]),
    "sentencepiece vocab": ({"data.tokenizer": "sentencepiece"}, 1,
                            ["data.vocab_size: required with data.tokenizer=sentencepiece"]),
    "data choice": ({"data.model_type": "wordpiece"}, 1,
                    ["data.model_type=wordpiece", "bpe or unigram"]),
    "valid fraction": ({"data.valid_fraction": 1.0}, 1,
                       ["data.valid_fraction=1.0", "[0, 1)"]),
    "remat policy": ({"model.remat_policy": "everything"}, 1,
                     ["model.remat_policy='everything'", "dots_saveable"]),
}


def message_of(overrides, num_devices):
    cfg = helpers.tiny_config({"data.path": helpers.SHAKESPEARE, **overrides})
    with pytest.raises(ConfigError) as err:
        validation.validate(cfg, num_devices)
    return str(err.value)


@pytest.mark.parametrize("case", list(CASES))
def test_validate_names_field_value_and_fix(case):
    overrides, num_devices, expected = CASES[case]
    message = message_of(overrides, num_devices)
    assert "\n" not in message
    for part in expected:
        assert part in message, (part, message)


def test_valid_tiny_config_passes_on_1_and_8_devices():
    cfg = helpers.tiny_config({"data.path": helpers.SHAKESPEARE})
    validation.validate(cfg, 1)
    validation.validate(cfg, 8)  # data = -1 takes all 8; batch 8 divides


def test_missing_experiment_and_missing_get_config(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as err:
        config_lib.load_config(str(tmp_path / "nope.py"))
    assert "nope.py" in str(err.value)
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(ConfigError, match="no get_config") as err:
        config_lib.load_config(str(empty))
    assert "empty.py" in str(err.value)


# ------------------------------------------------------------------------ through the CLI

def _no_get_config(tmp_path):
    path = tmp_path / "no_get_config.py"
    path.write_text("LR = 1e-3\n")
    return [f"--config={path}"], ["no_get_config.py", "get_config"]


def _short_data(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("hello\n")
    # Prepared into WORKDIR/data before the window check fails: both must be gone again.
    return [f"--config.data.path={path}"], ["short.txt", "fewer than train.seq_len+1"]


CLI_CASES = {
    "data too short for one window": _short_data,
    "unknown field": lambda tmp: (["--config.model.d_modle=64"],
                                  ["model.d_modle", "unknown config field", "lmjax/config.py"]),
    "wrong type": lambda tmp: (["--config.train.steps=ten"],
                               ["train.steps=ten", "expected a value of type int"]),
    "mesh product": lambda tmp: (["--config.mesh.data=2", "--config.mesh.fsdp=2"],
                                 ["data*expert*fsdp*tensor = 2*1*2*1 = 4", "1 devices", "-1"]),
    "missing data file": lambda tmp: ([f"--config.data.path={tmp}/missing.txt"],
                                      ["data.path", "missing.txt", "no such file"]),
    "missing experiment": lambda tmp: ([f"--config={tmp}/nope.py"], ["nope.py", "does not exist"]),
    "no get_config": _no_get_config,
    "unknown variant": lambda tmp: ([f"--config={helpers.EXPERIMENT}:size=huge"],
                                    ["size=huge", "size=baby"]),
}


def test_cli_rejects_bad_input_with_one_line_and_exit_2(tmp_path):
    """All cases start at once, so the processes' start-up overlaps."""
    runs = {}
    for name, make in CLI_CASES.items():
        args, expected = make(tmp_path)
        workdir = tmp_path / ("workdir_" + name.replace(" ", "_"))
        if not any(a.startswith("--config=") for a in args):
            args = [f"--config={helpers.EXPERIMENT}"] + args
        command = [sys.executable, "-m", "lmjax.train", *args, f"--workdir={workdir}"]
        process = subprocess.Popen(command, cwd=helpers.REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True,
                                   env=helpers.cli_env(JAX_LOG_COMPILES="1"))
        runs[name] = (process, expected, workdir)
    for name, (process, expected, workdir) in runs.items():
        stdout, stderr = process.communicate(timeout=180)
        lines = stderr.strip().splitlines()
        assert process.returncode == 2, (name, stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, stderr)
        assert "Traceback" not in stderr
        for part in expected:
            assert part in lines[0], (name, part, lines[0])
        assert stdout == ""
        assert not os.path.exists(workdir), name
