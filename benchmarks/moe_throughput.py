"""Mixture of experts on this machine: MoE (8 experts, top-2) against the dense model of equal
active parameters, dropless against capacity dispatch, and where the time of an MoE layer goes.

    python benchmarks/moe_throughput.py [--steps 10] [--rounds 2]

Three train steps are compiled in one process and timed in alternation (A B C A B C ...) so a
machine that gets busier penalises none: dense SwiGLU with d_ff = 2 x the expert width (the
same active MLP parameters per token), MoE dropless and MoE capacity (factor 1.25). Tokens/s
are medians over rounds. The breakdown times the four phases of one MoE layer's forward and
backward pass on that layer's shapes, each jitted on its own: router (logits, softmax, top-k,
losses), sort (argsort by expert, gather rows), grouped matmuls (three ragged_dots), combine
(unsort, weighted sum). XLA:CPU has no grouped-matmul kernel: it expands ragged_dot into one
masked matmul per expert, E times the active FLOPs, so on CPU dropless pays E/k x over dense in
the expert matmuls; TPU and GPU lower ragged_dot to grouped matmuls.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import build_step, time_steps  # noqa: E402
from lmjax import config as config_lib, validation  # noqa: E402
from lmjax.model import moe  # noqa: E402

E, K, F = 8, 2, 256  # experts, top-k, expert width
BASE = {"model.num_layers": 4, "model.d_model": 128, "model.num_heads": 4, "model.vocab_size": 256,
        "model.max_seq_len": 128, "model.positions": "rope", "model.norm": "rmsnorm",
        "model.use_bias": False, "model.tie_embeddings": False, "train.seq_len": 128,
        "train.batch_size": 16, "mesh.data": 1}
VARIANTS = {
    "dense swiglu d_ff 512": {"model.mlp": "swiglu", "model.d_ff": K * F},
    "moe dropless": {"model.mlp": "moe", "model.moe.num_experts": E, "model.moe.top_k": K,
                     "model.moe.d_ff": F, "model.d_ff": K * F},
    "moe capacity 1.25": {"model.mlp": "moe", "model.moe.num_experts": E, "model.moe.top_k": K,
                          "model.moe.d_ff": F, "model.d_ff": K * F,
                          "model.moe.dispatch": "capacity", "model.moe.capacity_factor": 1.25},
}


def config(overrides):
    cfg = config_lib.base_config()
    config_lib.apply_overrides(cfg, {**BASE, **overrides})
    validation.validate(cfg, jax.device_count())
    return cfg


def median_time(fn, *args, repeats=10):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def phase_breakdown(cfg):
    """ms of each phase of one MoE layer, forward + backward, on the layer's shapes."""
    N, D = cfg.train.batch_size * cfg.train.seq_len, cfg.model.d_model
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(N, D)), jnp.float32)
    router = jnp.asarray(rng.normal(size=(D, E)) * 0.02, jnp.float32)
    gate, up = (jnp.asarray(rng.normal(size=(E, D, F)) * 0.02, jnp.float32) for _ in range(2))
    down = jnp.asarray(rng.normal(size=(E, F, D)) * 0.02, jnp.float32)
    experts, weights, _ = moe.route(x @ router, K, True)
    flat = experts.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    sizes = jnp.bincount(flat, length=E).astype(jnp.int32)
    xs = x[order // K]
    ys = moe._swiglu_grouped(xs, gate, up, down, sizes)

    def router_phase(x, router):
        logits = x @ router
        experts, weights, probs = moe.route(logits, K, True)
        balance, z, _ = moe.router_losses(logits, probs, experts)
        return weights.sum() + balance + z

    def sort_phase(x, experts):
        order = jnp.argsort(experts.reshape(-1), stable=True)
        return x[order // K].sum()

    def matmul_phase(xs, gate, up, down):
        return moe._swiglu_grouped(xs, gate, up, down, sizes).sum()

    def combine_phase(ys, weights):
        unsorted = ys[jnp.argsort(order)] * weights.reshape(-1)[:, None]
        return unsorted.reshape(N, K, D).sum(1).sum()

    # The routing is an argument, not a closure constant, so XLA cannot fold the sort away.
    grad = lambda f, n: jax.jit(jax.grad(f, argnums=tuple(range(n))))
    return {"router": median_time(grad(router_phase, 2), x, router),
            "sort": median_time(grad(sort_phase, 1), x, experts),
            "grouped matmuls": median_time(grad(matmul_phase, 4), xs, gate, up, down),
            "combine": median_time(grad(combine_phase, 2), ys, weights)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    built = {}
    for name, overrides in VARIANTS.items():
        cfg = config(overrides)
        compiled, state, batch, flops, compile_s = build_step(cfg)
        built[name] = [compiled, state, batch, cfg]
        print(f"compiled {name} in {compile_s:.1f} s", file=sys.stderr)
    times = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, entry in built.items():
            compiled, state, batch, cfg = entry
            seconds, entry[1] = time_steps(compiled, state, batch, args.steps)
            times[name].append(seconds)
    tokens = BASE["train.batch_size"] * BASE["train.seq_len"]
    dense = statistics.median(times[next(iter(VARIANTS))])
    print(f"{jax.devices()[0].device_kind}, {os.cpu_count()} cores; 4 layers, d_model 128, "
          f"batch {BASE['train.batch_size']} x {BASE['train.seq_len']}, {args.steps} steps x "
          f"{args.rounds} rounds\n")
    print("| model | ms/step | tokens/s | vs dense |\n|---|---|---|---|")
    for name in VARIANTS:
        t = statistics.median(times[name])
        print(f"| {name} | {t * 1e3:.1f} | {tokens / t:,.0f} | {dense / t:.2f}x |")
    phases = phase_breakdown(built["moe dropless"][3])
    total = sum(phases.values())
    print("\n| one MoE layer, fwd + bwd | ms | share |\n|---|---|---|")
    for name, t in phases.items():
        print(f"| {name} | {t * 1e3:.2f} | {t / total:.0%} |")


if __name__ == "__main__":
    main()
