"""train.compile_cache_dir: a second run of the same config loads its steps from XLA's cache."""
import json
import os
import subprocess
import sys

from tests.helpers import REPO, TINY

# A process of its own per run: the cache is chosen before a process's first compile.
RUN = """
import json, sys
import jax
from lmjax.config import apply_overrides, base_config
from lmjax.train import loop
hits = []
HIT = "/jax/compilation_cache/cache_hits"
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event == HIT else None)
cfg = base_config()
apply_overrides(cfg, json.loads(sys.argv[1]))
summary = loop.train(cfg, sys.argv[2])
print(json.dumps({"hits": len(hits), "eval_loss": summary["eval_loss"]}))
"""


def run(tmp_path, name, cache_dir, env_cache_dir=None):
    overrides = {**TINY, "data.path": os.path.join(REPO, "lmjax", "data", "tinyshakespeare.txt"),
                 "model.vocab_size": 65, "train.eval_every": 5, "train.sample_tokens": 0,
                 "train.progress": False, "train.compile_cache_dir": cache_dir}
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    if env_cache_dir:
        env["JAX_COMPILATION_CACHE_DIR"] = env_cache_dir
    out = subprocess.run([sys.executable, "-c", RUN, json.dumps(overrides), str(tmp_path / name)],
                         check=True, capture_output=True, text=True, env=env, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_run_hits_the_cache_and_trains_identically(tmp_path):
    cache = str(tmp_path / "xla")
    first = run(tmp_path, "first", cache)
    assert first["hits"] == 0 and os.listdir(cache)
    second = run(tmp_path, "second", cache)
    assert second["hits"] >= 2  # the train and eval steps at least
    assert second["eval_loss"] == first["eval_loss"]
    uncached = run(tmp_path, "uncached", "")
    assert uncached["hits"] == 0 and uncached["eval_loss"] == first["eval_loss"]


def test_the_environments_cache_wins_and_keeps_small_steps(tmp_path):
    # As lmjax-sweep runs its points: the directory comes from the environment; the tiny steps
    # compile in well under jax's default 1 s minimum, so hits show that minimum was lifted.
    cache = str(tmp_path / "shared")
    first = run(tmp_path, "first", "", env_cache_dir=cache)
    assert first["hits"] == 0 and os.listdir(cache)
    second = run(tmp_path, "second", "", env_cache_dir=cache)
    configured = str(tmp_path / "configured")
    run(tmp_path, "configured_first", configured)
    assert second["hits"] == run(tmp_path, "configured_second", configured)["hits"] >= 2
