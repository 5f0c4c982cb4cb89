"""Step-time cost of the training methods against the plain AdamW step, side by side.

    python benchmarks/methods.py [--sizes baby,default] [--steps 0] [--rounds 1]

shakespeare_char at each size, as shipped but with dropout 0 and AdamW (the plain step), then
one change at a time: model.dropout=0.2, model.z_loss=1e-4, model.qk_norm (where the model has
it), optim.name=muon; and nanoGPT (PyTorch) without and with dropout 0.2. Every measurement is its
own process (benchmarks/train_throughput.py's children), alternated round by round so a machine
that gets busier penalises none; the table gives median ms/step and the ratio to the plain step.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
THROUGHPUT = os.path.join(HERE, "train_throughput.py")
PLAIN = {"model.dropout": 0.0, "optim.name": "adamw"}


def variants():
    sys.path.insert(0, os.path.dirname(HERE))
    from lmjax.config import base_config
    out = {"adamw (plain)": {}, "dropout 0.2": {"model.dropout": 0.2},
           "z_loss 1e-4": {"model.z_loss": 1e-4}}
    if "qk_norm" in base_config().model:
        out["qk_norm"] = {"model.qk_norm": True}
    out["muon"] = {"optim.name": "muon"}
    return out


def spawn(args):
    out = subprocess.run([sys.executable, THROUGHPUT, *args], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["s_per_step"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="baby,default")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (0 = 20 baby, 3 default)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for size in args.sizes.split(","):
        steps = args.steps or (20 if size == "baby" else 3)
        runs = {}
        for _ in range(args.rounds):
            for name, overrides in variants().items():
                print(f"  {size}: {name} ...", file=sys.stderr, flush=True)
                runs.setdefault(name, []).append(spawn([
                    "--child=lmjax", f"--size={size}", f"--steps={steps}",
                    f"--overrides={json.dumps({**PLAIN, **overrides})}"]))
            for dropout in (0.0, 0.2):
                name = f"nanoGPT dropout {dropout}"
                print(f"  {size}: {name} ...", file=sys.stderr, flush=True)
                runs.setdefault(name, []).append(spawn([
                    "--child=nanogpt", f"--size={size}", f"--steps={steps}",
                    f"--dropout={dropout}"]))
        medians = {name: statistics.median(times) for name, times in runs.items()}
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
