"""Step-time cost of the training methods against the plain AdamW step, side by side.

    python benchmarks/methods.py [--sizes baby,default] [--steps 0] [--warmup -1]

shakespeare_char at each size, as shipped but with dropout 0 and AdamW (the plain step), then
one change at a time: model.dropout=0.2, model.z_loss=1e-4, model.qk_norm, optim.name=muon; and
nanoGPT's step (PyTorch, eager, 2 threads: benchmarks/nanogpt_torch.py) without and with dropout
0.2. A size's steps are all built (and compiled) in one process, then run in turns, one step of
each per round (each round starting one variant further on), so a machine that gets busier or
quieter meanwhile penalises none of them. The table gives the median ms/step over the timed
rounds and the ratio to the same program's plain step.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXPERIMENT = os.path.join(ROOT, "experiments", "shakespeare_char.py")
PLAIN = {"model.dropout": 0.0, "optim.name": "adamw"}
VARIANTS = {"adamw (plain)": {}, "dropout 0.2": {"model.dropout": 0.2},
            "z_loss 1e-4": {"model.z_loss": 1e-4}, "qk_norm": {"model.qk_norm": True},
            "muon": {"optim.name": "muon"}}


def lmjax_step(size, overrides):
    """One lmjax train step of the experiment with `overrides` on a fresh batch: its seconds."""
    import jax
    from benchmarks.common import build_step, load
    compiled, state, batch, _, _ = build_step(load(f"{EXPERIMENT}:size={size}",
                                                   {**PLAIN, **overrides}))
    held = [state]

    def step():
        b = batch()
        start = time.perf_counter()
        held[0], metrics = compiled(held[0], b)
        jax.block_until_ready(metrics)
        return time.perf_counter() - start
    return step


def torch_step(size, dropout):
    from benchmarks.common import load
    from benchmarks.nanogpt_torch import nanogpt_step
    m, t = (lambda c: (c.model, c.train))(load(f"{EXPERIMENT}:size={size}"))
    return nanogpt_step(m.vocab_size, m.num_layers, m.num_heads, m.d_model, t.seq_len,
                        t.batch_size, dropout=dropout)


def measure(size, steps, warmup):
    """{name: median seconds per step}, the steps of every variant interleaved round by round."""
    runs = {}
    for name, overrides in VARIANTS.items():
        print(f"  {size}: building {name} ...", file=sys.stderr, flush=True)
        runs[name] = lmjax_step(size, overrides)
    for dropout in (0.0, 0.2):
        runs[f"nanoGPT dropout {dropout}"] = torch_step(size, dropout)
    times, names = {name: [] for name in runs}, list(runs)
    for r in range(warmup + steps):
        print(f"  {size}: round {r + 1} of {warmup + steps}", file=sys.stderr, flush=True)
        # Each round starts one further along: a step right after another program's (whose
        # threads may still spin) is every variant's turn, not always the plain step's.
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds = runs[name]()
            if r >= warmup:
                times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="baby,default")
    parser.add_argument("--steps", type=int, default=0,
                        help="timed rounds (0 = 20 baby, 3 default)")
    parser.add_argument("--warmup", type=int, default=-1,
                        help="untimed rounds first (-1 = 2 baby, 1 default)")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    rows = []
    for size in args.sizes.split(","):
        steps = args.steps or (20 if size == "baby" else 3)
        warmup = args.warmup if args.warmup >= 0 else (2 if size == "baby" else 1)
        medians = measure(size, steps, warmup)
        plain, torch_plain = medians["adamw (plain)"], medians["nanoGPT dropout 0.0"]
        for name, seconds in medians.items():
            base = torch_plain if name.startswith("nanoGPT") else plain
            rows.append((size, name, seconds * 1000, seconds / base))
    print("| config | step | ms/step | vs its plain step |")
    print("|---|---|---|---|")
    for size, name, ms, ratio in rows:
        print(f"| {size} | {name} | {ms:,.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
