"""The first steps' losses of shakespeare_char in lmjax and in karpathy/nanoGPT's train.py.

    python benchmarks/nanogpt_losses.py --nanogpt_dir=PATH [--size default] [--steps 20]
        [--every 2]

Both programs train the experiment's config (at size=default: 6 layers, d_model 384, seq 256,
batch 64, dropout 0.2, lr 1e-3 warmed up over 100 steps of a 5000-step cosine) for --steps
steps from their own initialisation and their own batches, then evaluate on 20 batches of the
validation split. The table gives the training loss of every --every-th step (nanoGPT's
`iter k` line is the loss of the k-th batch before its update, lmjax's step k + 1) and the final
validation loss. The two runs draw different weights and batches, so their losses agree in
expectation, not digit for digit. One run after the other, each in its own process.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
EXPERIMENT = os.path.join(ROOT, "experiments", "shakespeare_char.py")
ITER_LINE = re.compile(r"^iter (\d+): loss ([\d.]+)")
VAL_LINE = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def lmjax_losses(size: str, steps: int):
    """({step: train loss}, final eval loss) of lmjax-train on the experiment, full schedule."""
    from benchmarks.common import load
    horizon = load(f"{EXPERIMENT}:size={size}").train.steps
    with tempfile.TemporaryDirectory() as workdir:
        subprocess.run([
            sys.executable, "-m", "lmjax.train", f"--config={EXPERIMENT}:size={size}",
            f"--workdir={workdir}", f"--config.train.steps={steps}",
            f"--config.optim.decay_steps={horizon}", "--config.train.log_every=1",
            f"--config.train.eval_every={steps}", f"--config.train.checkpoint_every={steps}",
            "--config.train.sample_tokens=0", "--config.train.progress=False"],
            check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
    train = {r["step"]: r["train_loss"] for r in records if "train_loss" in r}
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    return train, evals[-1]


def nanogpt_losses(nanogpt_dir: str, size: str, steps: int):
    """The same from nanoGPT's train.py: iter k's loss is logged as step k + 1."""
    from benchmarks import nanogpt_real
    from benchmarks.common import load
    cfg = load(f"{EXPERIMENT}:size={size}")
    nanogpt_real.prepare_data(nanogpt_dir)
    with tempfile.TemporaryDirectory() as out_dir:
        # max_iters=steps: train.py evaluates at iteration `steps`, after that many updates as
        # lmjax does, then takes one more step (not reported). lr_decay_iters is the full run's.
        command = nanogpt_real.command(cfg, steps, cfg.model.dropout, out_dir, steps)
        command = [a for a in command if not a.startswith("--lr_decay_iters")]
        command.append(f"--lr_decay_iters={cfg.train.steps}")
        out = subprocess.run(command, cwd=nanogpt_dir, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"nanoGPT train.py failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    lines = out.stdout.splitlines()
    train = {int(m.group(1)) + 1: float(m.group(2)) for m in map(ITER_LINE.match, lines) if m}
    vals = {int(m.group(1)): float(m.group(3)) for m in map(VAL_LINE.match, lines) if m}
    return {k: v for k, v in train.items() if k <= steps}, vals[steps]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nanogpt_dir", required=True, help="a karpathy/nanoGPT checkout")
    parser.add_argument("--size", default="default")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=2)
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.nanogpt_dir, "train.py")):
        sys.exit(f"--nanogpt_dir={args.nanogpt_dir}: no train.py there; clone karpathy/nanoGPT")
    print(f"  {args.size}: lmjax ...", file=sys.stderr, flush=True)
    ours, our_val = lmjax_losses(args.size, args.steps)
    print(f"  {args.size}: nanoGPT train.py ...", file=sys.stderr, flush=True)
    theirs, their_val = nanogpt_losses(os.path.abspath(args.nanogpt_dir), args.size, args.steps)
    print("| step | lmjax train loss | nanoGPT train loss |")
    print("|---|---|---|")
    for step in sorted(set(ours) & set(theirs)):
        if step == 1 or step % args.every == 0:
            print(f"| {step} | {ours[step]:.4f} | {theirs[step]:.4f} |")
    print(f"| val after {args.steps} | {our_val:.4f} | {their_val:.4f} |")


if __name__ == "__main__":
    main()
