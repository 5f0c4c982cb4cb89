"""train.xla_options: parsed into typed values, refused by name before a run writes anything,
and given to every program the run compiles (XLA's own dump option shows each one)."""
import glob
import os

import pytest

from lmjax.config import apply_overrides, base_config
from lmjax.errors import ConfigError
from lmjax.train import loop, xla_options
from lmjax.validation import validate
from tests.helpers import SHAKESPEARE, TINY


def config(tmp_path, options):
    cfg = base_config()
    apply_overrides(cfg, {**TINY, "data.path": SHAKESPEARE, "model.vocab_size": 65,
                          "train.steps": 2, "train.eval_every": 2, "train.eval_steps": 1,
                          "train.sample_tokens": 3, "train.progress": False,
                          "train.compile_cache_dir": "", "train.xla_options": options})
    return cfg


def test_parse_types_each_value():
    assert xla_options.parse("") == {}
    assert xla_options.parse("xla_backend_optimization_level=1, xla_cpu_enable_fast_math=false,"
                             "xla_dump_to=/tmp/d") == {
        "xla_backend_optimization_level": 1, "xla_cpu_enable_fast_math": False,
        "xla_dump_to": "/tmp/d"}


@pytest.mark.parametrize("options, words", [
    ("xla_backend_optimization_level", "is not name=value"),
    ("xla_no_such_option=1", "No such compile option: 'xla_no_such_option'"),
    ("xla_backend_optimization_level=fast", "'fast' is not a valid int32"),
])
def test_bad_options_are_refused_before_the_workdir_exists(tmp_path, options, words):
    cfg = config(tmp_path, options)
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match="train.xla_options") as error:
        validate(cfg)
        loop.train(cfg, str(workdir))
    assert words in str(error.value)
    assert not workdir.exists()


def test_every_compiled_program_gets_the_options(tmp_path):
    dump = tmp_path / "dump"
    summary = loop.train(config(tmp_path, f"xla_dump_to={dump}"), str(tmp_path / "run"))
    assert summary["step"] == 2
    modules = {os.path.basename(p).split(".")[1]
               for p in glob.glob(str(dump / "module_*.before_optimizations.txt"))}
    for name in ("jit_init", "jit_train_step", "jit_eval_step", "jit_prefill", "jit_decode"):
        assert name in modules, (name, sorted(modules))
