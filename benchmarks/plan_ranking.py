"""Does lmjax-plan rank layouts the way they run? Predicted vs measured step time on cpu:8.

For several layouts of one model and global batch (mesh split, remat, microbatches, scan), the
planner's roofline estimate (XLA's FLOPs and bytes against this host's measured matmul peak and
memory bandwidth) is set beside the measured median step time of the same compiled step,
interleaved round by round so that load on the machine falls on every layout alike. Prints the
table, the ratio and Spearman's rho, and draws predicted against measured as a PNG.

    python benchmarks/plan_ranking.py [--rounds=7] [--png=plan_ranking.png]
"""
import argparse
import json
import os
import sys
import time

DEVICES = 8
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_force_host_platform_device_count={DEVICES}").strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

EXPERIMENT = "experiments/shakespeare_char.py"
MODEL = {"model.num_layers": 2, "model.d_model": 128, "model.num_heads": 4, "model.d_ff": 512,
         "model.max_seq_len": 64, "train.seq_len": 64, "train.batch_size": 32,
         "model.attention": "einsum"}
LAYOUTS = [
    {"mesh.data": 8, "mesh.fsdp": 1, "model.remat_policy": "none", "optim.grad_accum_steps": 1,
     "model.scan_layers": False},
    {"mesh.data": 8, "mesh.fsdp": 1, "model.remat_policy": "full", "optim.grad_accum_steps": 1,
     "model.scan_layers": False},
    {"mesh.data": 1, "mesh.fsdp": 8, "model.remat_policy": "none", "optim.grad_accum_steps": 1,
     "model.scan_layers": False},
    {"mesh.data": 8, "mesh.fsdp": 1, "model.remat_policy": "none", "optim.grad_accum_steps": 4,
     "model.scan_layers": False},
    {"mesh.data": 2, "mesh.fsdp": 4, "model.remat_policy": "full", "optim.grad_accum_steps": 2,
     "model.scan_layers": True},
]


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def label(layout) -> str:
    return (f"data={layout['mesh.data']} fsdp={layout['mesh.fsdp']} "
            f"remat={layout['model.remat_policy']} accum={layout['optim.grad_accum_steps']} "
            f"scan={layout['model.scan_layers']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed steps per layout")
    parser.add_argument("--png", default="plan_ranking.png")
    args = parser.parse_args(argv)

    import jax
    from lmjax import config as config_lib, validation
    from lmjax.parallel import mesh as mesh_lib, shardings
    from lmjax.plan import planner, target as target_lib
    from lmjax.train import step as step_lib

    target = target_lib.parse(f"cpu:{DEVICES}")
    facts = planner.facts_for(target)
    print(f"host: {facts.source}", flush=True)
    rows = []
    for layout in LAYOUTS:
        cfg = config_lib.load_config(EXPERIMENT)
        config_lib.apply_overrides(cfg, {**MODEL, **layout, "mesh.tensor": 1})
        validation.validate(cfg, DEVICES)
        rec = planner.plan(cfg, target, layout, facts, limit=0)
        step = step_lib.build(cfg, mesh_lib.make_mesh(cfg))
        state = step.init_state()
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, cfg.model.vocab_size,
                              (cfg.train.batch_size, cfg.train.seq_len + 1)).astype(np.int32)
        host = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
                "segment_ids": np.ones_like(tokens[:, 1:]),
                "positions": np.broadcast_to(np.arange(cfg.train.seq_len),
                                             tokens[:, 1:].shape).astype(np.int32)}
        batch = shardings.global_batch(host, step.batch_sharding)
        with step.context():
            compiled = step.train_step.lower(state, batch).compile()
        state, _ = compiled(state, batch)  # warm-up
        jax.block_until_ready(state)
        rows.append({"layout": layout, "predicted_s": rec["step_s"], "times": [],
                     "compiled": compiled, "state": state, "batch": batch})
        print(f"compiled {label(layout)}: predicted {rec['step_s'] * 1e3:.2f} ms", flush=True)
    for _ in range(args.rounds):  # interleaved: each round times every layout once
        for row in rows:
            start = time.perf_counter()
            row["state"], metrics = row["compiled"](row["state"], row["batch"])
            jax.block_until_ready((row["state"], metrics))
            row["times"].append(time.perf_counter() - start)
    predicted = [r["predicted_s"] for r in rows]
    measured = [float(np.median(r["times"])) for r in rows]
    rho = spearman(predicted, measured)
    print(f"\n{'layout':<58} {'predicted ms':>12} {'measured ms':>12} {'measured/pred':>13}")
    for row, p, m in zip(rows, predicted, measured):
        print(f"{label(row['layout']):<58} {p * 1e3:12.2f} {m * 1e3:12.2f} {m / p:13.2f}")
    print(f"Spearman rho (predicted vs measured median of {args.rounds}): {rho:.3f}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(np.array(predicted) * 1e3, np.array(measured) * 1e3)
    for row, p, m in zip(rows, predicted, measured):
        ax.annotate(label(row["layout"]).replace(" scan", "\nscan"), (p * 1e3, m * 1e3),
                    fontsize=6)
    ax.set_xlabel("lmjax-plan roofline estimate (ms)")
    ax.set_ylabel("measured median step (ms)")
    ax.set_title(f"cpu:{DEVICES}, Spearman rho = {rho:.2f}")
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    print(f"wrote {args.png}")
    print(json.dumps({"rho": rho, "predicted_s": predicted, "measured_s": measured}))
    return rho


if __name__ == "__main__":
    main()
