"""`lmjax-plan --search`: compile candidate layouts of one model and global batch, rank them.

Candidates vary the mesh split over MESH_AXES, the remat policy, gradient-accumulation
microbatches and layer scan. Trying every combination would cost hundreds of compiles, so the
search goes one dimension at a time: every mesh first, then the remat policies, microbatch
counts and scan setting for the best few layouts so far. Two rules skip compiles that could
not fit: a candidate whose parameters, optimizer state and batch alone exceed the device's
memory, and, for one layout, a remat policy that saves more (or fewer microbatches) than one
that already does not fit. Compiles run in parallel processes, as many as the cores and memory
allow. Fields given on the command line (`--config.mesh.tensor=1`,
`--config.model.scan_layers=True`) are held fixed: each one held removes a stage.
"""
import concurrent.futures
import math
import multiprocessing
import os
import time

from lmjax.parallel.mesh import BATCH_AXES, MESH_AXES

# Each from the least memory to the most: for one layout, a value after one that does not fit
# is ruled out without compiling (fewer microbatches, or more saved activations, need more).
REMAT_POLICIES = ("full", "dots_with_no_batch_dims_saveable", "dots_saveable", "none")
MICROBATCHES = (8, 4, 2, 1)
MONOTONE = ("model.remat_policy", "optim.grad_accum_steps")
KEEP = 2  # layouts carried from one stage to the next
COMPILE_MEMORY = 6 * 2 ** 30  # host memory one large compile may take


def _powers_of_two(n: int) -> list[int]:
    return [2 ** k for k in range(int(math.log2(n)) + 1) if n % 2 ** k == 0]


def mesh_candidates(cfg, num_devices: int) -> list[dict]:
    """Every split of the devices over MESH_AXES (powers of two) that the model's shapes allow.

    The expert axis is tried only for mixture-of-experts models; an axis this search does not
    know stays at 1.
    """
    m, t = cfg.model, cfg.train
    moe = m.mlp == "moe"
    out = []
    for tensor in _powers_of_two(num_devices):
        if any(v % tensor for v in (m.num_heads, m.num_kv_heads or m.num_heads, m.d_ff,
                                    m.vocab_size)):
            continue
        for expert in (_powers_of_two(num_devices // tensor) if moe else [1]):
            if moe and m.moe.num_experts % expert:
                continue
            for fsdp in _powers_of_two(num_devices // (tensor * expert)):
                data = num_devices // (tensor * expert * fsdp)
                sizes = {"data": data, "expert": expert, "fsdp": fsdp, "tensor": tensor}
                rows = math.prod(sizes.get(a, 1) for a in BATCH_AXES)
                if m.d_model % fsdp or t.batch_size % rows:
                    continue
                out.append({f"mesh.{a}": sizes.get(a, 1) for a in MESH_AXES})
    return out


def _variants(cfg, base: dict, field: str, values) -> list[dict]:
    """`base` with `field` set to each value (in order), where the global batch allows it."""
    out = []
    for value in values:
        candidate = dict(base, **{field: value})
        if field == "optim.grad_accum_steps":
            shards = math.prod(candidate.get(f"mesh.{a}", 1) for a in BATCH_AXES)
            if cfg.train.batch_size % (value * shards):
                continue
        out.append(candidate)
    return out


def default_jobs() -> int:
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(1, min(os.cpu_count() or 1, ram // COMPILE_MEMORY))


# ---------------------------------------------------------------- one candidate, in a worker

_WORKER = {}


def _init_worker(experiment, target, base_overrides, facts, limit):
    from lmjax.plan import planner
    planner.use_platform(target)
    _WORKER.update(experiment=experiment, target=target, base=base_overrides, facts=facts,
                   limit=limit)


def _config(overrides):
    from lmjax import config as config_lib, validation
    cfg = config_lib.load_config(_WORKER["experiment"])
    config_lib.apply_overrides(cfg, dict(_WORKER["base"], **overrides))
    cfg.data.path = ""  # the planner reads no data
    validation.prepare(cfg, _WORKER["target"].num_devices, log=lambda _: None)
    return cfg


def _state_bytes(cfg, devices) -> int:
    """Parameters, optimizer state and batch per device, from shapes alone (no compile)."""
    from lmjax.parallel import mesh as mesh_lib
    from lmjax.parallel.shardings import bytes_per_device
    from lmjax.train import step as step_lib
    step = step_lib.build(cfg, mesh_lib.make_mesh(cfg, devices))
    return bytes_per_device(step.abstract_state()) + bytes_per_device(step.abstract_batch())


def evaluate(overrides: dict) -> dict:
    """One candidate's record, or a note that its state alone cannot fit (nothing compiled)."""
    from lmjax.errors import UsageError
    from lmjax.plan import planner, target as target_lib
    target, limit = _WORKER["target"], _WORKER["limit"]
    try:
        cfg = _config(overrides)
    except UsageError as e:
        return {"overrides": overrides, "fits": False, "skipped": str(e)}
    if limit:
        state = _state_bytes(cfg, target_lib.devices(target))
        if state > limit:
            return {"overrides": overrides, "fits": False, "headroom_bytes": limit - state,
                    "skipped": f"state and batch alone take {state / 2 ** 30:.2f} GiB"}
    return planner.plan(cfg, target, overrides, _WORKER["facts"], limit)


# ---------------------------------------------------------------- the search

def _key(rec):
    """Fitting layouts by estimated step time, then the rest by how far they miss."""
    if rec.get("fits"):
        return (0, rec["step_s"])
    return (1, -rec.get("headroom_bytes", -float("inf")))


def _label(overrides: dict) -> str:
    o = overrides
    mesh = "x".join(str(o.get(f"mesh.{a}", 1)) for a in MESH_AXES)
    return (f"{mesh:<13} "
            f"{o['model.remat_policy']:<33} {o['optim.grad_accum_steps']:>5} "
            f"{str(o['model.scan_layers']):<5}")


def _row(rank, rec) -> str:
    label = _label(rec["overrides"])
    if "skipped" in rec:
        return f"{rank:>4}  {label}  ruled out: {rec['skipped']}"
    mem = rec["memory"]["total"] / 2 ** 30
    if not rec["fits"]:
        return (f"{rank:>4}  {label}  {mem:8.2f}  does not fit by "
                f"{-rec['headroom_bytes'] / 2 ** 30:.2f} GiB")
    return (f"{rank:>4}  {label}  {mem:8.2f}  {rec['step_s'] * 1e3:10.4g}  "
            f"{rec['tokens_per_s_per_chip']:10,.0f}  {100 * rec['mfu']:5.1f}%  "
            f"{rec['compile_s']:6.1f}")


def run(cfg, target, args, overrides) -> dict:
    """Ranks candidate layouts; prints progress and the table; returns the winner's record."""
    from lmjax.plan import aot, planner, target as target_lib
    start = time.perf_counter()
    jobs = args.jobs or default_jobs()
    limit = aot.usable_memory(target_lib.devices(target)[0])
    facts = planner.facts_for(target)  # measured once, before compiles compete for the cores
    base = {"model.remat_policy": cfg.model.remat_policy,
            "optim.grad_accum_steps": cfg.optim.grad_accum_steps,
            "model.scan_layers": cfg.model.scan_layers}
    done = {}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_init_worker,
            initargs=(args.config, target, dict(overrides), facts, limit)) as pool:

        def out_of_memory(rec):
            return not rec.get("fits") and rec.get("headroom_bytes", 0) < 0

        def stage(name, chains, field=None):
            """Evaluates each chain of candidates in order; in a chain of a MONOTONE field, a
            candidate that does not fit rules out the rest of its chain."""
            todo = sum(1 for chain in chains for c in chain if _label(c) not in done)
            print(f"search: {name}: {todo} candidate(s) on {jobs} process(es)", flush=True)
            running = {}

            def advance(chain):
                while chain:
                    candidate = chain.pop(0)
                    rec = done.get(_label(candidate))
                    if rec is None:
                        running[pool.submit(evaluate, candidate)] = chain
                        return
                    if field in MONOTONE and out_of_memory(rec):
                        value = candidate[field]
                        for rest in (c for c in chain if _label(c) not in done):
                            note(rest, f"needs more memory than {field.split('.')[-1]}="
                                       f"{value}, which does not fit")
                        return

            def note(candidate, why):
                rec = {"overrides": candidate, "fits": False, "skipped": why}
                done[_label(candidate)] = rec
                print(f"  {_row(len(done), rec)}", flush=True)

            for chain in chains:
                advance(list(chain))
            while running:
                finished, _ = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    chain = running.pop(future)
                    rec = future.result()
                    done[_label(rec["overrides"])] = rec
                    print(f"  {_row(len(done), rec)}", flush=True)
                    advance([rec["overrides"], *chain])  # done now: may rule out the rest
            return sorted(done.values(), key=_key)[:KEEP]

        # Fields set on the command line stay as set; the search varies the others.
        meshes = [m for m in mesh_candidates(cfg, target.num_devices)
                  if all(str(v) == str(overrides[k]) for k, v in m.items() if k in overrides)]
        best = stage("mesh", [[dict(base, **m)] for m in meshes])
        for field, values in (("model.remat_policy", REMAT_POLICIES),
                              ("optim.grad_accum_steps", MICROBATCHES),
                              ("model.scan_layers", (True, False))):
            if field in overrides:
                continue
            chains = [_variants(cfg, rec["overrides"], field, values) for rec in best]
            best = stage(field, chains, field)
    ranked = sorted(done.values(), key=_key)
    elapsed = time.perf_counter() - start
    print(f"\nlayouts of {args.config} on {target.describe()}, ranked by estimated step time:")
    axes = " x ".join(a[0] for a in MESH_AXES)
    print(f"{'rank':>4}  {'mesh ' + axes:<13} {'remat':<33} {'accum':>5} {'scan':<5}  "
          f"{'mem GiB':>8}  {'step ms':>10}  {'tok/s/chip':>10}  {'MFU':>6}  {'compile':>6}")
    for i, rec in enumerate(ranked, 1):
        print(_row(i, rec))
    compiled = sum(1 for r in ranked if "skipped" not in r)
    print(f"search took {elapsed:.1f} s: {compiled} compiled, {len(ranked) - compiled} ruled "
          "out before compiling")
    winner = dict(ranked[0])
    if winner.get("fits"):
        flags = " ".join(f"--config.{k}={v}" for k, v in sorted(winner["overrides"].items()))
        print(f"best layout: {flags}")
    else:
        print("no candidate fits; use a larger slice or a smaller batch")
    winner["search_s"] = elapsed
    winner["ranked"] = [{"overrides": r["overrides"], "fits": r.get("fits", False),
                         "step_s": r.get("step_s"), "total_bytes":
                         r.get("memory", {}).get("total")} for r in ranked]
    return winner
