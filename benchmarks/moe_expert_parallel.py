"""Expert parallelism on 8 fake CPU devices: the two transports of model.moe.expert_parallel
(lmjax.model.moe.EXPERT_PARALLEL) side by side, and the collectives each compiles to.

    python benchmarks/moe_expert_parallel.py [--steps 3] [--rounds 3] [--dispatch dropless]

For each mesh (expert=4 x data=2, expert=2 x fsdp=2 x tensor=2) and transport (shard_map,
constraints) a train step of the same MoE (8 experts, top-2) is compiled in one process and
timed in alternation, so a machine that gets busier penalises none; ms/step are medians over
rounds. The second table compiles one MoE layer's forward and backward pass alone on each mesh
and lists what XLA's partitioner put into it: collectives by kind with the bytes of their
per-device results, and every all-gather of an expert weight (rank 3, leading dimension the
experts). Fake devices share this machine's cores, so the times rank the transports' work and
copies, not a real interconnect.
"""
import argparse
import collections
import os
import re
import statistics
import sys

if "jax" not in sys.modules:  # fake devices exist only if set before jax starts
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import build_step, time_steps  # noqa: E402
from lmjax import config as config_lib, validation  # noqa: E402
from lmjax.model import aux, moe  # noqa: E402
from lmjax.model.mlp import MLP  # noqa: E402
from lmjax.parallel import mesh as mesh_lib, shardings  # noqa: E402
from lmjax.parallel.context import context  # noqa: E402
from lmjax.train.state import strip_boxes  # noqa: E402

E, K, F = 8, 2, 256  # experts, top-k, expert width
BASE = {"model.num_layers": 2, "model.d_model": 128, "model.num_heads": 4, "model.vocab_size": 256,
        "model.max_seq_len": 128, "model.positions": "rope", "model.norm": "rmsnorm",
        "model.use_bias": False, "model.tie_embeddings": False, "model.mlp": "moe",
        "model.moe.num_experts": E, "model.moe.top_k": K, "model.moe.d_ff": F,
        "model.d_ff": K * F, "train.seq_len": 128, "train.batch_size": 16}
MESHES = {
    "expert=4 x data=2": {"mesh.data": 2, "mesh.expert": 4},
    "expert=2 x fsdp=2 x tensor=2": {"mesh.data": 1, "mesh.expert": 2, "mesh.fsdp": 2,
                                     "mesh.tensor": 2},
}
KINDS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
COLLECTIVE = re.compile(r"= (\(.*?\)|\S+) (" + "|".join(KINDS) + r")(?:-start)?\(")
ARRAY = re.compile(r"(pred|[sfu]\d+|bf16)\[([\d,]*)\]")


def config(mesh, transport, dispatch):
    cfg = config_lib.base_config()
    config_lib.apply_overrides(cfg, {**BASE, **MESHES[mesh], "model.moe.dispatch": dispatch,
                                     "model.moe.expert_parallel": transport})
    validation.validate(cfg, jax.device_count())
    return cfg


def collectives(hlo_text, cfg):
    """{kind: [count, result bytes per device]} and the shapes of expert-weight all-gathers."""
    D, sizes = cfg.model.d_model, mesh_lib.mesh_shape(cfg, jax.device_count())
    # An expert weight, whole or in part: (experts, D or its fsdp shard, F or its tensor shard).
    weight_dims = {tuple(sorted((d, f))) for d in (D, D // sizes["fsdp"])
                   for f in (F, F // sizes["tensor"])}
    found = collections.defaultdict(lambda: [0, 0])
    weight_gathers = []
    for result, kind in COLLECTIVE.findall(hlo_text):
        arrays = ARRAY.findall(result)
        found[kind][0] += 1
        for dtype, dims in arrays:
            shape = [int(d) for d in dims.split(",") if d]
            bits = 1 if dtype == "pred" else int(re.sub(r"\D", "", dtype))
            found[kind][1] += int(np.prod(shape)) * max(bits // 8, 1)
            if (kind == "all-gather" and len(shape) == 3 and E % shape[0] == 0
                    and tuple(sorted(shape[1:])) in weight_dims):
                weight_gathers.append(f"{dtype}[{dims}]")
    return found, weight_gathers


def layer_hlo(cfg):
    """Compiled HLO of one MoE layer's forward + backward on the config's mesh and shapes."""
    mesh = mesh_lib.make_mesh(cfg)
    rules = shardings.rules(cfg)
    mlp = MLP(cfg.model)
    t = cfg.train
    x = jax.ShapeDtypeStruct((t.batch_size, t.seq_len, cfg.model.d_model), np.float32)
    with context(mesh, rules):
        boxed = jax.eval_shape(mlp.init, jax.random.key(0), x)["params"]
        param_sh = shardings.logical_to_sharding(boxed, mesh, rules)
        x_sh = jax.sharding.NamedSharding(
            mesh, nn.logical_to_mesh_axes(("batch", "act_len", "act_embed"), rules))
        params = strip_boxes(boxed)

        def loss(p, x):
            y, variables = mlp.apply({"params": p}, x, mutable=[aux.COLLECTION])
            return (y ** 2).mean() + aux.collect(variables)[0]

        grad = jax.jit(jax.grad(loss, argnums=(0, 1)), in_shardings=(param_sh, x_sh))
        return grad.lower(params, x).compile().as_text()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dispatch", default="dropless", choices=tuple(moe.DISPATCH))
    args = parser.parse_args()
    if jax.device_count() != 8:
        sys.exit(f"needs 8 devices, found {jax.device_count()}: run it as a fresh process so "
                 "XLA_FLAGS=--xla_force_host_platform_device_count=8 takes effect")
    cases = [(m, t) for m in MESHES for t in moe.EXPERT_PARALLEL]
    built = {}
    for case in cases:
        compiled, state, batch, _, compile_s = build_step(config(*case, args.dispatch))
        built[case] = [compiled, state, batch]
        print(f"compiled {' / '.join(case)} in {compile_s:.1f} s", file=sys.stderr)
    times = {case: [] for case in cases}
    for _ in range(args.rounds):
        for case, entry in built.items():
            seconds, entry[1] = time_steps(entry[0], entry[1], entry[2], args.steps)
            times[case].append(seconds)
    tokens = BASE["train.batch_size"] * BASE["train.seq_len"]
    print(f"8 fake devices on {os.cpu_count()} cores; {BASE['model.num_layers']} MoE layers, "
          f"d_model 128, {E} experts top-{K} of width {F}, {args.dispatch}, batch "
          f"{BASE['train.batch_size']} x {BASE['train.seq_len']}; medians of {args.rounds} "
          f"rounds x {args.steps} steps\n")
    print("| mesh | transport | ms/step | tokens/s | vs shard_map |\n|---|---|---|---|---|")
    for mesh, transport in cases:
        t, ref = (statistics.median(times[(mesh, name)]) for name in (transport, "shard_map"))
        print(f"| {mesh} | {transport} | {t * 1e3:,.0f} | {tokens / t:,.0f} | {ref / t:.2f}x |")
    print("\n| mesh | transport | one MoE layer fwd + bwd: collectives (count, MiB per device) "
          "| expert-weight all-gathers |\n|---|---|---|---|")
    for mesh, transport in cases:
        cfg = config(mesh, transport, args.dispatch)
        found, gathers = collectives(layer_hlo(cfg), cfg)
        parts = ", ".join(f"{kind} {found[kind][0]} ({found[kind][1] / 2**20:.2f})"
                          for kind in KINDS if kind in found)
        print(f"| {mesh} | {transport} | {parts} | {', '.join(gathers) or 'none'} |")


if __name__ == "__main__":
    main()
