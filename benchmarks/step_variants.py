"""A config's train step under variants of its settings, timed in turn in one process.

    python benchmarks/step_variants.py [--config=experiments/shakespeare_char.py:size=baby]
        --variants='{"as shipped": {}, "older emitters":
                     {"train.xla_options": "xla_cpu_use_fusion_emitters=false"}}'
        [--rounds=6] [--steps=30]

Each variant (a name and its {dotted field: value} overrides, train.xla_options included) is
built and compiled once; then every round runs --steps steps of each variant in turn, after two
warm-up steps, so a machine that gets busier or quieter affects all of them alike. Prints each
variant's median and quartiles of ms/step over all rounds, its ratio to the first variant and
its compile time. Between separate processes the same step differs by 10-25% on a shared 2-core
machine, against 2-4% between variants here, so settings are compared with this rather than by
alternating processes. Process-wide state (peak RSS, environment variables) needs
benchmarks/train_throughput.py, which runs each program in its own process.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402

from benchmarks.common import build_step, load  # noqa: E402


def run_rounds(built: dict, rounds: int, steps: int) -> dict:
    """{name: [seconds per step, ...]} over `rounds` interleaved rounds of `steps` each."""
    times = {name: [] for name in built}
    for r in range(rounds):
        for name, parts in built.items():
            compiled, state, batch = parts
            for i in range(2 + steps):
                b = batch()
                start = time.perf_counter()
                state, metrics = compiled(state, b)
                jax.block_until_ready(metrics)
                if i >= 2:
                    times[name].append(time.perf_counter() - start)
            parts[1] = state
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{name} {1e3 * np.median(t[-steps:]):.1f}" for name, t in times.items()),
            file=sys.stderr, flush=True)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(
        os.path.dirname(HERE), "experiments", "shakespeare_char.py") + ":size=baby")
    parser.add_argument("--variants", required=True, help="JSON {name: {field: value}}")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    variants = json.loads(args.variants)
    built, compile_s = {}, {}
    for name, overrides in variants.items():
        compiled, state, batch, _, compile_s[name] = build_step(load(args.config, overrides))
        built[name] = [compiled, state, batch]
    times = run_rounds(built, args.rounds, args.steps)
    first = np.median(times[next(iter(times))])
    print(f"{args.config}: {args.rounds} rounds x {args.steps} steps per variant, in turn")
    print("| variant | ms/step (median) | quartiles | vs first | compile s |")
    print("|---|---|---|---|---|")
    for name, t in times.items():
        q1, median, q3 = np.percentile(t, [25, 50, 75]) * 1e3
        print(f"| {name} | {median:.2f} | {q1:.2f}-{q3:.2f} | {median / 1e3 / first:.3f}x | "
              f"{compile_s[name]:.1f} |")


if __name__ == "__main__":
    main()
