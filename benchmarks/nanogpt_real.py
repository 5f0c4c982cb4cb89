"""The real karpathy/nanoGPT train.py, timed as a peer: point it at a checkout (--nanogpt_dir).

nanoGPT's data/shakespeare_char/prepare.py downloads its input unless input.txt is there, so the
Tiny Shakespeare that lmjax ships is copied in first: nothing is fetched. train.py runs on CPU,
uncompiled, with the shapes of an lmjax config passed as its command-line overrides; the step
time is the median of the `iter N: ... time X ms` lines after warm-up, and the peak RSS is the
child's own (wait4).
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = os.path.join(ROOT, "lmjax", "data", "tinyshakespeare.txt")
ITER_LINE = re.compile(r"^iter (\d+): loss ([\d.]+), time ([\d.]+)ms")
VAL_LINE = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def prepare_data(nanogpt_dir: str) -> None:
    data = os.path.join(nanogpt_dir, "data", "shakespeare_char")
    if all(os.path.exists(os.path.join(data, f)) for f in ("train.bin", "val.bin", "meta.pkl")):
        return
    if not os.path.exists(os.path.join(data, "input.txt")):
        shutil.copyfile(SHAKESPEARE, os.path.join(data, "input.txt"))
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True,
                   stdout=subprocess.DEVNULL)


def command(cfg, steps: int, dropout: float, out_dir: str, eval_interval: int) -> list:
    m, t = cfg.model, cfg.train
    return [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu",
            "--compile=False", f"--out_dir={out_dir}", f"--block_size={t.seq_len}",
            f"--batch_size={t.batch_size}", f"--n_layer={m.num_layers}",
            f"--n_head={m.num_heads}", f"--n_embd={m.d_model}", f"--max_iters={steps}",
            f"--lr_decay_iters={steps}", f"--dropout={dropout}", "--log_interval=1",
            f"--eval_interval={eval_interval}", f"--eval_iters={t.eval_steps}",
            "--always_save_checkpoint=False"]


def run(nanogpt_dir: str, cfg, steps: int, dropout: float = 0.0, warmup: int = 2,
        eval_interval: int = 10 ** 9) -> dict:
    """{"s_per_step", "peak_rss_mib", "wall_s", "val_loss"} of one train.py process."""
    prepare_data(nanogpt_dir)
    with tempfile.TemporaryDirectory() as out_dir:
        start = time.perf_counter()
        proc = subprocess.Popen(command(cfg, steps, dropout, out_dir, eval_interval),
                                cwd=nanogpt_dir, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"nanoGPT train.py failed:\n{output[-2000:]}")
    times = [float(m.group(3)) / 1000 for m in map(ITER_LINE.match, output.splitlines()) if m
             and int(m.group(1)) >= warmup]
    vals = [float(m.group(3)) for m in map(VAL_LINE.match, output.splitlines()) if m]
    return {"s_per_step": statistics.median(times), "compile_s": 0.0,
            "peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": wall,
            "val_loss": vals[-1] if vals else None}
