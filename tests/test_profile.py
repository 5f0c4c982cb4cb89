"""train.profile_steps: a trace of a window of steps and the train step's ops by time."""
import csv
import glob

import pytest

from helpers import SHAKESPEARE, tiny_config
from lmjax.errors import ConfigError
from lmjax.train import profile
from lmjax.validation import validate


def test_self_time_is_duration_less_nested_events():
    # a [0, 100) holds b [10, 30) and c [40, 70), which holds d [45, 50); e stands alone.
    events = [("c", 40, 30), ("a", 0, 100), ("e", 200, 10), ("b", 10, 20), ("d", 45, 5)]
    assert dict(profile.self_times(events)) == {"a": 50, "b": 20, "c": 25, "d": 5, "e": 10}


def test_hlo_instructions_read_tuple_shapes_and_op_names():
    hlo = ('  %while.3 = (s32[], f32[2,3]{1,0}, (f32[], s32[])) while(%tuple.1), condition=%c, '
           'body=%b, metadata={op_name="jit(f)/while"}\n'
           '  ROOT %dot.5 = f32[4,4]{1,0} dot(%a, %b), lhs_contracting_dims={1}\n'
           '%fused_computation.1 (param_0: f32[2]) -> f32[2] {\n')
    assert profile.hlo_instructions(hlo) == {
        "while.3": ("(s32[], f32[2,3]{1,0}, (f32[], s32[]))", "jit(f)/while"),
        "dot.5": ("f32[4,4]{1,0}", "")}


@pytest.mark.parametrize("start,steps", [(-1, 2), (0, -1), (4, 2)])
def test_a_window_outside_the_run_is_refused(start, steps):
    cfg = tiny_config({"train.profile_start": start, "train.profile_steps": steps})
    with pytest.raises(ConfigError, match=r"train\.profile_(start|steps)"):
        validate(cfg, 1)


def test_a_run_traces_its_window_and_counts_each_op_per_step(tmp_path):
    from lmjax.train import loop
    layers = 3
    cfg = tiny_config({"train.profile_start": 2, "train.profile_steps": 2,
                       "train.eval_every": 100, "train.sample_tokens": 0,
                       "model.num_layers": layers, "model.vocab_size": 65,
                       "model.scan_layers": True, "model.remat_policy": "none",
                       "data.path": SHAKESPEARE, "data.tokenizer": "char",
                       "train.compile_cache_dir": ""})
    loop.train(cfg, str(tmp_path))
    out = tmp_path / "profile"
    assert glob.glob(str(out / "plugins/profile/*/*.xplane.pb"))
    assert glob.glob(str(out / "plugins/profile/*/perfetto_trace.json.gz"))
    assert (out / "ops.txt").read_text().startswith("steps 3-4, trace ")
    rows = list(csv.DictReader((out / "ops.csv").open()))
    times = [float(r["ms_per_step"]) for r in rows]
    assert times == sorted(times, reverse=True) and times[0] > 0
    # The scanned layer body runs once per layer in each step; the LM head once. Steps before
    # the window run asynchronously, so a trace that also held them would count more.
    body = [r for r in rows if "/while/body/" in r["op_name"]]
    assert len(body) > 20
    assert {float(r["calls_per_step"]) for r in body} == {layers}
    head = [r for r in rows if r["op_name"].endswith("jvp(Transformer)/embed.attend/dot_general")]
    assert head and {float(r["calls_per_step"]) for r in head} == {1.0}
    assert sum(float(r["share"]) for r in rows) == pytest.approx(1.0)


def test_a_window_cut_short_still_ends_its_trace(tmp_path):
    import jax
    cfg = tiny_config({"train.profile_start": 0, "train.profile_steps": 3})
    with pytest.raises(RuntimeError, match="stopped"):
        with profile.StepProfile(cfg, str(tmp_path), 0, log=print) as profiler:
            with profiler.step(1):
                pass
            raise RuntimeError("stopped inside the window")
    jax.profiler.start_trace(str(tmp_path / "again"))  # refused while another trace runs
    jax.profiler.stop_trace()
