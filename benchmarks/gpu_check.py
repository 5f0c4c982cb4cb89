"""One short run on a GPU machine: do the GPU-only paths run, and how fast is lmjax there.

    python benchmarks/gpu_check.py [--out=DIR] [--budget_s=420]

1. Paths: bf16 matmul; jax.nn.dot_product_attention with implementation="cudnn", forward and
   backward (the dot_product_cudnn backend), checked against the einsum backend in float32.
2. llama_1b (experiments/llama_1b.py: bf16 compute, f32 params, cuDNN attention) on one GPU:
   tokens/s and MFU against the chip's data-sheet bf16 peak (lmjax.train.mfu.PEAK_FLOPS).
3. shakespeare_char size=default trained with lmjax-train until its eval loss reaches 1.47 (or
   the time budget runs out): wall seconds to that point.
Prints a table and writes gpu_check.json to --out.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def check_paths() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from lmjax.model.attention import ATTENTION_BACKENDS
    out = {"devices": [d.device_kind for d in jax.devices()]}
    a = jnp.ones((4096, 4096), jnp.bfloat16)
    out["bf16_matmul"] = bool(jnp.isfinite(jax.jit(lambda x: x @ x)(a)).all())
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 512, 8, 64)), jnp.bfloat16) for _ in range(3))

    from lmjax.config import base_config
    cfg = base_config().model
    with cfg.unlocked():
        cfg.d_model, cfg.num_heads, cfg.head_dim = 512, 8, 64

    def loss(backend, q, k, v):
        return ATTENTION_BACKENDS[backend](q, k, v, None, cfg).astype(jnp.float32).sum()

    try:
        y, grads = jax.jit(jax.value_and_grad(lambda *x: loss("dot_product_cudnn", *x),
                                              argnums=(0, 1, 2)))(q, k, v)
        f32 = [x.astype(jnp.float32) for x in (q, k, v)]
        y_ref, grads_ref = jax.jit(jax.value_and_grad(lambda *x: loss("einsum", *x),
                                                      argnums=(0, 1, 2)))(*f32)
        out["cudnn_attention"] = True
        out["cudnn_vs_einsum_max_grad_err"] = float(max(
            jnp.abs(g.astype(jnp.float32) - r).max() for g, r in zip(grads, grads_ref)))
    except Exception as e:  # report, then go on to the throughput runs
        out["cudnn_attention"] = f"failed: {type(e).__name__}: {str(e)[:300]}"
    return out


def llama_1b_throughput(steps: int = 10) -> dict:
    from benchmarks.common import build_step, load, time_steps
    from lmjax.train.mfu import peak_flops_per_device
    cfg = load(f"{ROOT}/experiments/llama_1b.py", {
        "train.batch_size": 8, "mesh.fsdp": 1, "mesh.data": -1,
        "model.attention": "dot_product_cudnn"})
    compiled, state, batch, flops, compile_s = build_step(cfg)
    seconds, _ = time_steps(compiled, state, batch, steps)
    tokens = cfg.train.batch_size * cfg.train.seq_len
    peak, source = peak_flops_per_device(0.0)
    return {"s_per_step": seconds, "tokens_per_s": tokens / seconds,
            "mfu": tokens / seconds * flops / peak, "peak_source": source,
            "compile_s": compile_s, "batch": cfg.train.batch_size, "seq": cfg.train.seq_len}


def shakespeare_time_to(target: float, budget_s: float) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "lmjax.train",
                                 f"--config={ROOT}/experiments/shakespeare_char.py:size=default",
                                 f"--workdir={workdir}", "--config.train.progress=False",
                                 "--config.train.sample_tokens=0",
                                 # The config's CPU choices (8 microbatches, the
                                 # cheap ops recomputed) only cost time on a GPU with
                                 # memory to spare.
                                 "--config.optim.grad_accum_steps=1",
                                 "--config.model.remat_policy=none"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        metrics, reached = os.path.join(workdir, "metrics.jsonl"), None
        while proc.poll() is None and time.perf_counter() - start < budget_s:
            time.sleep(5)
            if os.path.exists(metrics):
                evals = [r for r in map(json.loads, open(metrics)) if "eval_loss" in r]
                hit = [r for r in evals if r["eval_loss"] <= target]
                if hit:
                    reached = {"step": hit[0]["step"], "eval_loss": hit[0]["eval_loss"],
                               "wall_s": time.perf_counter() - start}
                    break
        proc.kill()
        last = None
        if os.path.exists(metrics):
            evals = [r for r in map(json.loads, open(metrics)) if "eval_loss" in r]
            last = evals[-1] if evals else None
    return {"target": target, "reached": reached, "last_eval": last,
            "elapsed_s": time.perf_counter() - start}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--budget_s", type=float, default=420.0,
                        help="time allowed for the shakespeare run to reach its target")
    args = parser.parse_args()
    results = {"paths": check_paths()}
    print(json.dumps(results["paths"]), flush=True)
    results["llama_1b"] = llama_1b_throughput()
    print(json.dumps(results["llama_1b"]), flush=True)
    results["shakespeare_default"] = shakespeare_time_to(1.47, args.budget_s)
    print(json.dumps(results["shakespeare_default"]), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(results, f, indent=1)
    l = results["llama_1b"]
    s = results["shakespeare_default"]
    print("| check | result |\n|---|---|")
    print(f"| devices | {', '.join(results['paths']['devices'])} |")
    print(f"| bf16 matmul / cuDNN attention | {results['paths']['bf16_matmul']} / "
          f"{results['paths']['cudnn_attention']} |")
    print(f"| llama_1b tokens/s, MFU | {l['tokens_per_s']:,.0f}, {l['mfu']:.1%} "
          f"({l['peak_source']}) |")
    reached = s["reached"]
    print(f"| shakespeare default to val {s['target']} | "
          f"{'%.0f s at step %d' % (reached['wall_s'], reached['step']) if reached else 'not reached: ' + str(s['last_eval'])} |")


if __name__ == "__main__":
    main()
