"""Where a config's train step spends its time: its XLA ops by time per step, from a trace.

    python benchmarks/step_profile.py [--config=experiments/shakespeare_char.py:size=baby]
        [--overrides='{"model.dropout": 0.0}'] [--steps=10] [--top=40] [--out=DIR]

Builds the config's train step as a run would (random batches of its shapes), runs two steps
to warm up, traces --steps more with jax.profiler into --out (XProf / TensorBoard, Perfetto) and
prints the ops by time per step with the model code each comes from (lmjax.train.profile),
then XLA's memory analysis of the step. Tracing slows small ops down: compare the shares of
ops, and time steps with benchmarks/step_variants.py or train_throughput.py.
"""
import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402

from benchmarks.common import build_step, load, time_steps  # noqa: E402
from lmjax.train import profile  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(
        os.path.dirname(HERE), "experiments", "shakespeare_char.py") + ":size=baby")
    parser.add_argument("--overrides", default="{}", help="JSON {dotted field: value}")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", default="", help="trace directory (default: a temporary one)")
    args = parser.parse_args()
    cfg = load(args.config, json.loads(args.overrides))
    compiled, state, batch, _, compile_s = build_step(cfg)
    untraced, state = time_steps(compiled, state, batch, args.steps)
    out = args.out or tempfile.mkdtemp(prefix="lmjax_profile_")
    batches = [batch() for _ in range(args.steps)]
    jax.profiler.start_trace(out, create_perfetto_trace=True)
    start = time.perf_counter()
    for i, b in enumerate(batches):
        with jax.profiler.StepTraceAnnotation("train", step_num=i):
            state, metrics = compiled(state, b)
    jax.block_until_ready((state, metrics))
    traced = (time.perf_counter() - start) / args.steps
    jax.profiler.stop_trace()
    xspace, rows = profile.trace_ops(out, compiled, args.steps)
    print(f"{args.config} {args.overrides}: compile {compile_s:.1f} s, "
          f"{1e3 * untraced:.1f} ms/step untraced (median of {args.steps}), "
          f"{1e3 * traced:.1f} traced; trace in {xspace.parent}")
    print(profile.format_table(rows, args.top))
    memory = compiled.memory_analysis()
    if memory is not None:
        print("memory analysis, MiB: " + ", ".join(
            f"{name} {getattr(memory, name + '_size_in_bytes') / 2**20:.1f}"
            for name in ("argument", "output", "alias", "temp")))


if __name__ == "__main__":
    main()
