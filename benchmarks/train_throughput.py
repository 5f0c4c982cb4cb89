"""Training throughput of lmjax vs nanoGPT (PyTorch), side by side on this machine.

    python benchmarks/train_throughput.py [--sizes baby,default] [--steps 30] [--rounds 2]
        [--dropout=P] [--variants=NAME,...] [--train_to_end] [--nanogpt_dir=PATH]

Each measurement runs in its own process (so peak RSS is that program's alone), alternating
lmjax, its variants (VARIANTS: other settings, or glibc told to keep freed memory) and nanoGPT
(A B C A B C) so a machine that gets busier penalises none. The table gives the median step
time after warm-up, tokens/s, MFU against the f32 matmul peak measured in the same run, compile
time and peak RSS. Both programs train with the size's dropout (0 on baby, 0.2 on default) or
--dropout's. --train_to_end also runs the baby config whole (process start to summary:
start-up, data, compile, every step and eval, the sample and the plot) with lmjax-train (its
compilation cache cold, then warm, as WHOLE_RUN_VARIANTS lists) and, given --nanogpt_dir, with
nanoGPT's train.py, in turn, and prints each one's wall time, peak RSS and final eval loss.
FLOPs per token: 6·N + 12·L·d·T (N without the position table), the same formula for both
programs. With --nanogpt_dir (a checkout of karpathy/nanoGPT) the real train.py is timed as
another program in the same rotation (benchmarks/nanogpt_real.py). --lmjax_python runs the
lmjax side under another install's interpreter, for example one made with the README's
`pip install -e .`: the test extra adds libtpu (lmjax-plan's TPU compiles), and JAX loads it at
start-up wherever it is installed, TPU or not (about 90 MiB of RSS on a CPU host).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXPERIMENT = os.path.join(ROOT, "experiments", "shakespeare_char.py")
# glibc hands XLA's freed scratch buffers back to the OS after every call and page-faults them in
# again on the next step; these settings keep them in the process (speed for memory).
RETAIN_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "1000000000000",
                 "MALLOC_ARENA_MAX": "1"}
RETAIN = {"train.host_allocator": "retain"}  # the same, set by the run itself (mallopt)
# XLA:CPU's MLIR fusion emitters (its default) or its older ones, which the default size uses.
FUSION_EMITTERS = {"train.xla_options": ""}
NO_FUSION_EMITTERS = {"train.xla_options": "xla_cpu_use_fusion_emitters=false"}
# Beside the config as shipped, each (overrides, environment): the larger size's former setting
# (recompute each layer in the backward pass, 4 microbatches of 16), its former dropout
# masks (JAX's threefry rather than the hash), the allocator that keeps its freed memory, from
# the config or the environment, and the other kind of XLA:CPU fusion emitters.
VARIANTS = {"baby": {"host_allocator=retain": (RETAIN, {}),
                     "malloc=retain": ({}, RETAIN_MALLOC),
                     "fusion_emitters=false": (NO_FUSION_EMITTERS, {})},
            "default": {"remat=full accum=4": ({"model.remat_policy": "full",
                                                "optim.grad_accum_steps": 4}, {}),
                        "dropout_rng=threefry": ({"model.dropout_rng": "threefry"}, {}),
                        "host_allocator=retain": (RETAIN, {}),
                        "malloc=retain": ({}, RETAIN_MALLOC),
                        "fusion_emitters=true": (FUSION_EMITTERS, {})}}
# Whole runs (--train_to_end), in this order each round, {name: overrides}: the first finds the
# round's compilation cache empty and fills it, the others find it warm, as a rerun would.
WHOLE_RUN_VARIANTS = {"cold compile cache": {}, "warm compile cache": {},
                      "warm compile cache + host_allocator=retain": RETAIN,
                      "cold compile cache + fusion_emitters=false": NO_FUSION_EMITTERS,
                      "warm compile cache + fusion_emitters=false": NO_FUSION_EMITTERS}


def child_lmjax(size, steps, overrides):
    sys.path.insert(0, ROOT)
    from benchmarks.common import build_step, load, peak_rss_mib, time_steps
    cfg = load(f"{EXPERIMENT}:size={size}", overrides)
    compiled, state, batch, flops, compile_s = build_step(cfg)
    seconds, _ = time_steps(compiled, state, batch, steps)
    return {"s_per_step": seconds, "compile_s": compile_s, "flops_per_token": flops,
            "peak_rss_mib": peak_rss_mib()}


def child_nanogpt(size, steps, dropout=0.0):
    sys.path.insert(0, ROOT)
    from benchmarks.common import load, peak_rss_mib
    from benchmarks.nanogpt_torch import time_nanogpt
    cfg = load(f"{EXPERIMENT}:size={size}")
    m, t = cfg.model, cfg.train
    seconds = time_nanogpt(m.vocab_size, m.num_layers, m.num_heads, m.d_model, t.seq_len,
                           t.batch_size, steps, dropout=dropout)
    return {"s_per_step": seconds, "compile_s": 0.0, "peak_rss_mib": peak_rss_mib()}


def child_nanogpt_real(size, steps, nanogpt_dir, dropout=0.0):
    sys.path.insert(0, ROOT)
    from benchmarks import nanogpt_real
    from benchmarks.common import load
    return nanogpt_real.run(nanogpt_dir, load(f"{EXPERIMENT}:size={size}"), steps, dropout)


def child_peak():
    from lmjax.train.mfu import measure_matmul_flops
    return {"flops": max(measure_matmul_flops(n) for n in (1024, 2048))}


def spawn(args, env_extra=None, python=sys.executable):
    env = dict(os.environ, **(env_extra or {}))
    out = subprocess.run([python, __file__, *args], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_to_end(size, overrides, python=sys.executable):
    """{"eval_loss", "wall_s", "peak_rss_mib"} of one whole lmjax-train process: start-up,
    data preparation, compile, every step and eval, the end-of-run sample and the plot."""
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        proc = subprocess.Popen([python, "-m", "lmjax.train",
                                 f"--config={EXPERIMENT}:size={size}", f"--workdir={workdir}",
                                 "--config.train.progress=False",
                                 *(f"--config.{k}={v}" for k, v in overrides.items())],
                                stdout=subprocess.DEVNULL, env={  # the cache the run is given
                                    k: v for k, v in os.environ.items()
                                    if k != "JAX_COMPILATION_CACHE_DIR"})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"lmjax-train {size} failed")
        with open(os.path.join(workdir, "summary.json")) as f:
            loss = json.load(f)["eval_loss"]
    return {"eval_loss": loss, "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}


def end_to_end(size, rounds, nanogpt_dir, python=sys.executable, chosen=None):
    """Whole runs of the config, lmjax-train and (given its checkout) nanoGPT's train.py in
    turn, `rounds` times; prints their median wall time and largest peak RSS."""
    sys.path.insert(0, ROOT)
    from benchmarks import nanogpt_real
    from benchmarks.common import load
    cfg = load(f"{EXPERIMENT}:size={size}")
    variants = {f"lmjax-train, {name}": overrides for name, overrides in WHOLE_RUN_VARIANTS.items()
                if chosen is None or name in chosen}
    runs = {**{name: [] for name in variants}, **({"nanoGPT train.py": []} if nanogpt_dir else {})}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache:
            for name, overrides in variants.items():
                print(f"  {size}: whole {name} run ...", file=sys.stderr, flush=True)
                runs[name].append(train_to_end(size, {**overrides,
                                                      "train.compile_cache_dir": cache}, python))
        if nanogpt_dir:
            print(f"  {size}: whole nanoGPT train.py run ...", file=sys.stderr, flush=True)
            run = nanogpt_real.run(nanogpt_dir, cfg, cfg.train.steps,
                                   eval_interval=cfg.train.eval_every)
            runs["nanoGPT train.py"].append({**run, "eval_loss": run["val_loss"]})
    print(f"\n| whole run, {size} ({cfg.train.steps} steps) | wall s (median of {rounds}) | "
          "peak RSS MiB | final eval loss |")
    print("|---|---|---|---|")
    summary = {}
    for name, results in runs.items():
        wall = statistics.median(r["wall_s"] for r in results)
        rss = max(r["peak_rss_mib"] for r in results)
        summary[name] = (wall, rss)
        print(f"| {name} | {wall:.1f} | {rss:,.0f} | {results[-1]['eval_loss']:.4f} |")
    if nanogpt_dir:
        peer_wall, peer_rss = summary["nanoGPT train.py"]
        for name in variants:
            wall, rss = summary[name]
            print(f"| {name} / nanoGPT train.py (ratio) | {wall / peer_wall:.2f}x | "
                  f"{rss / peer_rss:.2f}x | |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="baby,default")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (0 = 30 baby, 3 default)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train_to_end", action="store_true")
    parser.add_argument("--nanogpt_dir", default="",
                        help="a karpathy/nanoGPT checkout: also time its real train.py")
    parser.add_argument("--whole_runs", default=None,
                        help="comma-separated names from WHOLE_RUN_VARIANTS for --train_to_end "
                             "(default: all)")
    parser.add_argument("--lmjax_python", default=sys.executable,
                        help="the Python whose install runs lmjax (default: this one)")
    parser.add_argument("--child", choices=["lmjax", "nanogpt", "nanogpt_real", "peak"])
    parser.add_argument("--size", default="baby")
    parser.add_argument("--overrides", default="{}")
    parser.add_argument("--variants", default=None,
                        help="comma-separated names from VARIANTS to run beside the config "
                             "(default: all of the size's; '' for none)")
    parser.add_argument("--dropout", type=float, default=None,
                        help="dropout of every program (default: each size's config, "
                             "0 on baby, 0.2 on default)")
    args = parser.parse_args()
    whole_runs = None if args.whole_runs is None else args.whole_runs.split(",")
    unknown = [n for n in whole_runs or () if n not in WHOLE_RUN_VARIANTS]
    if unknown:
        parser.error(f"--whole_runs: {unknown[0]!r} is not one of {', '.join(WHOLE_RUN_VARIANTS)}")
    if args.child:
        result = {"lmjax": lambda: child_lmjax(args.size, args.steps, json.loads(args.overrides)),
                  "nanogpt": lambda: child_nanogpt(args.size, args.steps, args.dropout or 0.0),
                  "nanogpt_real": lambda: child_nanogpt_real(args.size, args.steps,
                                                             args.nanogpt_dir,
                                                             args.dropout or 0.0),
                  "peak": child_peak}[args.child]()
        print(json.dumps(result))
        return

    peak = spawn(["--child=peak"])["flops"]
    print(f"f32 matmul peak measured here: {peak / 1e9:.1f} GFLOP/s")
    rows = []
    sys.path.insert(0, ROOT)
    from benchmarks.common import load
    for size in args.sizes.split(","):
        steps = args.steps or (30 if size == "baby" else 3)
        cfg = load(f"{EXPERIMENT}:size={size}")
        # Both sides train with the same dropout: the config's unless --dropout says otherwise.
        dropout = cfg.model.dropout if args.dropout is None else args.dropout
        same = {"model.dropout": dropout}
        chosen = VARIANTS.get(size, {})
        if args.variants is not None:
            names = [n for n in args.variants.split(",") if n]
            unknown = [n for n in names if n not in chosen]
            if unknown:
                parser.error(f"--variants: {unknown[0]!r} is not a {size} variant; use "
                             f"{', '.join(chosen)}")
            chosen = {n: chosen[n] for n in names}
        variants = {"lmjax": ({}, {}), **{f"lmjax {name}": variant
                                          for name, variant in chosen.items()}}
        results = {name: [] for name in [*variants, "nanoGPT"]}
        if args.nanogpt_dir:
            results["nanoGPT train.py"] = []
        for _ in range(args.rounds):
            for name, (overrides, env) in variants.items():
                print(f"  {size}: {name} ...", file=sys.stderr, flush=True)
                results[name].append(spawn(["--child=lmjax", f"--size={size}",
                                            f"--steps={steps}",
                                            f"--overrides={json.dumps({**same, **overrides})}"],
                                           env, args.lmjax_python))
            print(f"  {size}: nanoGPT ...", file=sys.stderr, flush=True)
            results["nanoGPT"].append(spawn(["--child=nanogpt", f"--size={size}",
                                             f"--steps={steps}", f"--dropout={dropout}"]))
            if args.nanogpt_dir:
                print(f"  {size}: nanoGPT train.py ...", file=sys.stderr, flush=True)
                # train.py's first iterations include its start-up: time a few more.
                results["nanoGPT train.py"].append(spawn([
                    "--child=nanogpt_real", f"--size={size}", f"--steps={steps + 2}",
                    f"--nanogpt_dir={os.path.abspath(args.nanogpt_dir)}",
                    f"--dropout={dropout}"]))
        tokens = cfg.train.batch_size * cfg.train.seq_len
        flops = results["lmjax"][0]["flops_per_token"]
        size_rows = {}
        for name, runs in results.items():
            s = statistics.median(r["s_per_step"] for r in runs)
            size_rows[name] = (f"{size}, dropout {dropout:g}", name, s * 1000, tokens / s,
                               tokens / s * flops / peak, max(r["compile_s"] for r in runs),
                               max(r["peak_rss_mib"] for r in runs))
        rows.extend(size_rows.values())
        for peer in ("nanoGPT", "nanoGPT train.py"):
            if peer not in size_rows:
                continue
            base = size_rows[peer]
            for name in variants:
                row = size_rows[name]
                rows.append((row[0], f"{name} / {peer}", row[2] / base[2], row[3] / base[3], None,
                             None, row[6] / base[6]))

    header = ("config", "program", "ms/step", "tokens/s", "MFU", "compile s", "peak RSS MiB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for size, name, ms, tps, mfu, comp, rss in rows:
        if " / nanoGPT" in name:
            print(f"| {size} | {name} (ratio) | {ms:.2f}x | {tps:.2f}x | | | {rss:.2f}x |")
            continue
        print(f"| {size} | {name} | {ms:,.1f} | {tps:,.0f} | {mfu:.0%} | {comp:.1f} | {rss:,.0f} |")
    if args.train_to_end:
        end_to_end("baby", args.rounds, args.nanogpt_dir and os.path.abspath(args.nanogpt_dir),
                   args.lmjax_python, whole_runs)


if __name__ == "__main__":
    main()
