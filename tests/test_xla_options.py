"""train.xla_options: parsed into typed values, refused by name before a run writes anything,
and given to every program the run compiles (XLA's own dump option shows each one)."""
import glob
import json
import os
import subprocess
import sys

import pytest

from lmjax.config import apply_overrides, base_config
from lmjax.errors import ConfigError
from lmjax.train import loop, xla_options
from lmjax.validation import validate
from tests.helpers import REPO, SHAKESPEARE, TINY, cli_env


def overrides(options):
    return {**TINY, "data.path": SHAKESPEARE, "model.vocab_size": 65, "train.steps": 2,
            "train.eval_every": 2, "train.eval_steps": 1, "train.sample_tokens": 3,
            "train.progress": False, "train.compile_cache_dir": "", "train.xla_options": options}


def config(options):
    cfg = base_config()
    apply_overrides(cfg, overrides(options))
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
    cfg = config(options)
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match="train.xla_options") as error:
        validate(cfg)
        loop.train(cfg, str(workdir))
    assert words in str(error.value)
    assert not workdir.exists()


# A process per run: the compilation cache is chosen before a process's first compile.
RUN = """
import json, sys
from lmjax.config import apply_overrides, base_config
from lmjax.train import loop
cfg = base_config()
apply_overrides(cfg, json.loads(sys.argv[1]))
print(json.dumps(loop.train(cfg, sys.argv[2])["step"]))
"""


def train_in_process(tmp_path, name, options, cache):
    env = cli_env(JAX_COMPILATION_CACHE_DIR=cache)
    args = [json.dumps(overrides(options)), str(tmp_path / name)]
    out = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "2"
    return out.stdout


def test_every_compiled_program_gets_the_options(tmp_path):
    # The cache already holds every program: the cache's key leaves xla_dump_* out, so only a
    # run that turns the cache off writes a dump of each one.
    cache = str(tmp_path / "xla")
    train_in_process(tmp_path, "first", "", cache)
    assert os.listdir(cache)
    dump = tmp_path / "dump"
    printed = train_in_process(tmp_path, "dumped", f"xla_dump_to={dump}", cache)
    modules = {os.path.basename(p).split(".")[1]
               for p in glob.glob(str(dump / "module_*.before_optimizations.txt"))}
    for name in ("jit_init", "jit_train_step", "jit_eval_step", "jit_prefill", "jit_decode"):
        assert name in modules, (name, sorted(modules))
    assert "compilation cache off for this run" in printed
