"""Step time of the same config under two checkouts of lmjax, side by side (A B A B).

    python benchmarks/revisions.py --roots OLD_CHECKOUT,. [--size baby] [--steps 40] [--rounds 3]

Each measurement is a fresh process that imports lmjax and benchmarks/common.py from that
checkout, so a change can be timed against the code before it on one machine in one run. The
table gives the median step time over rounds and the ratio to the first root.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, sys
root, size, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, root)
from benchmarks.common import build_step, load, peak_rss_mib, time_steps
cfg = load(f"{root}/experiments/shakespeare_char.py:size={size}")
compiled, state, batch, flops, compile_s = build_step(cfg)
seconds, _ = time_steps(compiled, state, batch, steps)
print(json.dumps({"s_per_step": seconds, "compile_s": compile_s, "peak_rss_mib": peak_rss_mib()}))
"""


def measure(root: str, size: str, steps: int) -> dict:
    env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", CHILD, root, size, str(steps)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roots", required=True, help="comma-separated checkouts of lmjax")
    parser.add_argument("--size", default="baby")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    roots = [os.path.abspath(r) for r in args.roots.split(",")]
    results = {r: [] for r in roots}
    for i in range(args.rounds):
        for root in roots:
            results[root].append(measure(root, args.size, args.steps))
            print(f"round {i + 1}: {root}: {results[root][-1]}", file=sys.stderr, flush=True)
    base = statistics.median(r["s_per_step"] for r in results[roots[0]])
    print(f"| checkout | {args.size} ms/step (median of {args.rounds}) | ratio | compile s | "
          "peak RSS MiB |")
    print("|---|---|---|---|---|")
    for root in roots:
        med = statistics.median(r["s_per_step"] for r in results[root])
        comp = statistics.median(r["compile_s"] for r in results[root])
        rss = statistics.median(r["peak_rss_mib"] for r in results[root])
        print(f"| {root} | {med * 1e3:.1f} | {med / base:.2f} | {comp:.1f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
