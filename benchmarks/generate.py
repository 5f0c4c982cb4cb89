"""Generation throughput: KV cache (lmjax.infer.generate) vs full recomputation per token.

  python benchmarks/generate.py [--layers=4 --d_model=256 --new_tokens=256 --batch=1 --repeats=3]

Both decode greedily from the same random model and prompt; full recomputation runs one jitted
forward over the whole (fixed-size) window per new token, as lmjax.sample does. Compilation is
excluded (one warm-up run each). Prints the median tokens/s of each and their ratio, and checks
both produced the same tokens.
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.config import apply_overrides, base_config
from lmjax.infer.generate import Generator
from lmjax.model import build_model
from lmjax.train.state import strip_boxes


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d_model", type=int, default=256)
    p.add_argument("--new_tokens", type=int, default=256)
    p.add_argument("--prompt_len", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cfg = base_config()
    seq = args.prompt_len + args.new_tokens
    apply_overrides(cfg, {"model.num_layers": args.layers, "model.d_model": args.d_model,
                          "model.num_heads": max(1, args.d_model // 64),
                          "model.d_ff": 4 * args.d_model, "model.vocab_size": 256,
                          "model.max_seq_len": seq, "train.seq_len": min(128, seq)})
    model = build_model(cfg.model)
    params = strip_boxes(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(0, 256, args.prompt_len)) for _ in range(args.batch)]

    generator = Generator(cfg, params)
    cached = lambda: generator.generate(prompts, args.new_tokens)

    forward = jax.jit(lambda window: jnp.argmax(model.apply({"params": params}, window), -1))

    def recompute():
        ids = np.zeros((args.batch, seq), np.int32)
        ids[:, :args.prompt_len] = prompts
        for t in range(args.prompt_len, seq):
            ids[:, t] = np.asarray(forward(ids))[:, t - 1]
        return [list(row[args.prompt_len:]) for row in ids]

    rows = []
    outputs = {}
    for name, fn in (("KV cache", cached), ("full recomputation", recompute)):
        outputs[name] = fn()  # warm-up: compiles
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        rows.append((name, statistics.median(times)))
    same = [list(map(int, r)) for r in outputs["KV cache"]] == \
           [list(map(int, r)) for r in outputs["full recomputation"]]
    tokens = args.batch * args.new_tokens
    print(f"model: {args.layers} layers, d_model {args.d_model}, batch {args.batch}, prompt "
          f"{args.prompt_len}, {args.new_tokens} new tokens, {jax.devices()[0].platform}")
    print(f"{'method':<20} {'median s':>9} {'tokens/s':>10}")
    for name, seconds in rows:
        print(f"{name:<20} {seconds:>9.3f} {tokens / seconds:>10.1f}")
    print(f"speed-up of the cache: {rows[1][1] / rows[0][1]:.1f}x; same tokens: {same}")


if __name__ == "__main__":
    main()
