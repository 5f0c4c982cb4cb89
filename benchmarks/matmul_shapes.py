"""The dense matmuls of a shakespeare_char step, XLA:CPU against torch, at each shape and dtype.

    python benchmarks/matmul_shapes.py [--sizes baby,default] [--xla_flags "FLAGS" ...]

For each size, the forward matmuls of one layer and the LM head on the flattened (batch x seq)
activations: q/k/v/out (d x d), fc_in (d x 4d), fc_out (4d x d), head (d x vocab); and
attention's two batched matmuls over one microbatch's (batch x heads) of full causal length,
scores (T x head_dim x T) and probs @ v (T x T x head_dim). Each is timed as a jitted `x @ w` in
JAX (with the XLA_FLAGS of each --xla_flags, one process each) and as `x @ w` (torch.bmm for the
batched ones) in torch with 2 threads, median of repeated calls, in GFLOP/s, f32 and bf16. A
step's backward runs the same shapes transposed; the dense matmuls are most of its FLOPs, so
this table says how much of the gap to nanoGPT is the matmul library's.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXPERIMENT = os.path.join(ROOT, "experiments", "shakespeare_char.py")


def shapes(size):
    sys.path.insert(0, ROOT)
    from benchmarks.common import load
    cfg = load(f"{EXPERIMENT}:size={size}")
    rows, d = cfg.train.batch_size * cfg.train.seq_len, cfg.model.d_model
    heads = (cfg.train.batch_size // cfg.optim.grad_accum_steps) * cfg.model.num_heads
    T, K = cfg.train.seq_len, d // cfg.model.num_heads
    return {"q/k/v/out": (1, rows, d, d), "fc_in": (1, rows, d, cfg.model.d_ff),
            "fc_out": (1, rows, cfg.model.d_ff, d), "head": (1, rows, d, cfg.model.vocab_size),
            "attn scores": (heads, T, K, T), "attn probs @ v": (heads, T, T, K)}


def operand_shapes(batch, m, k, n):
    """The operands of a (batch of) m x k by k x n matmul; batch 1 is a plain 2-D one."""
    return ((m, k), (k, n)) if batch == 1 else ((batch, m, k), (batch, k, n))


def median_seconds(call, budget_s=1.0):
    call()
    times, start = [], time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < budget_s and len(times) < 2000):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def child_jax(size):
    import jax
    import jax.numpy as jnp
    out = {}
    for name, (batch, m, k, n) in shapes(size).items():
        for dtype in ("float32", "bfloat16"):
            x, w = (jnp.ones(shape, dtype) for shape in operand_shapes(batch, m, k, n))
            matmul = jax.jit(lambda a, b: a @ b)
            s = median_seconds(lambda: matmul(x, w).block_until_ready())
            out[f"{name} {dtype}"] = 2 * batch * m * k * n / s / 1e9
    return out


def child_torch(size):
    import torch
    torch.set_num_threads(2)
    out = {}
    for name, (batch, m, k, n) in shapes(size).items():
        for dtype in ("float32", "bfloat16"):
            x, w = (torch.ones(shape, dtype=getattr(torch, dtype))
                    for shape in operand_shapes(batch, m, k, n))
            s = median_seconds(lambda: x @ w)
            out[f"{name} {dtype}"] = 2 * batch * m * k * n / s / 1e9
    return out


def spawn(child, size, xla_flags=""):
    env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, __file__, f"--child={child}", f"--size={size}"],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="baby,default")
    parser.add_argument("--xla_flags", action="append", default=None,
                        help="XLA_FLAGS of another JAX column (repeatable)")
    parser.add_argument("--child", choices=["jax", "torch"])
    parser.add_argument("--size", default="baby")
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"jax": child_jax, "torch": child_torch}[args.child](args.size)))
        return
    flag_sets = [""] + (args.xla_flags or [])
    columns = [f"jax {f}" if f else "jax" for f in flag_sets] + ["torch"]
    print("| size | matmul (batch x m x k x n) | dtype | "
          + " | ".join(f"{c} GFLOP/s" for c in columns) + " | jax / torch |")
    print("|---|---|---|" + "---|" * (len(columns) + 1))
    for size in args.sizes.split(","):
        print(f"  {size} ...", file=sys.stderr, flush=True)
        results = [spawn("jax", size, f) for f in flag_sets] + [spawn("torch", size)]
        for name, (batch, m, k, n) in shapes(size).items():
            for dtype in ("float32", "bfloat16"):
                key = f"{name} {dtype}"
                rates = [r[key] for r in results]
                cells = " | ".join(f"{r:,.0f}" for r in rates)
                print(f"| {size} | {name} ({batch} x {m} x {k} x {n}) | {dtype} | {cells} | "
                      f"{rates[0] / rates[-1]:.2f}x |")


if __name__ == "__main__":
    main()
