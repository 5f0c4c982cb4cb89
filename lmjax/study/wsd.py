"""IsoFLOP studies from WSD runs: each model size's stable phase, one short cooldown branch per
(size, FLOP budget), and the table of their decayed losses.

`plan` turns sizes and budgets into lmjax-sweep points. A branch for budget C trains a model of
N parameters for T = C / (6 N) / tokens_per_step steps in all: it starts from the size's stable
phase (constant LR after warmup) at step S = floor((1 - cooldown) T) and decays the LR over the
remaining T - S steps (`optim.schedule=wsd`, `optim.decay_start=S`,
`init_from=checkpoint:{root}/STABLE@S`), so its loss is that of a run decayed over its own
budget (Hägele et al. 2024). The stable phase runs in segments, each ending where a branch
starts and continuing the previous one from its last checkpoint; points come budget by budget,
smallest first, so a sweep stopped part-way has whole IsoFLOP profiles of the small budgets.

`collect` reads a finished (or partly finished) sweep ROOT into results.csv (a row per run:
role, num_params, tokens, flops_budget, eval_loss, ...) and curves.csv (every eval of every
run), the inputs of `lmjax-scaling --results`:

    python -m lmjax.study.wsd --config=experiments/STUDY.py[:ARG] --workdir=ROOT --out=DIR
"""
import csv
import json
import os
import sys

from lmjax.cli import ArgumentParser
from lmjax.errors import UsageError

RESULT_FIELDS = ("name", "role", "size", "num_params", "non_embedding_params", "tokens",
                 "flops_budget", "steps", "decay_start", "eval_loss", "train_loss",
                 "wall_time_s", "status")
EVALS_PER_SEGMENT = 4


def plan(sizes: dict, budgets: dict, tokens_per_step: int, cooldown: float = 0.2) -> list[dict]:
    """Sweep points for every size and budget, in the order they can run.

    sizes: {size name: (num_params, overrides)}; budgets: {FLOPs: [size names]}. Each point is
    a dict: role ("stable" segment or "cooldown" branch), size, budget, steps (the run's last
    step), start (its first step: 0, or the step it continues `source` from), source (index of
    the point it starts from, or None) and the size's overrides.
    """
    points, last_segment = [], {}
    for c in sorted(budgets):
        for size in budgets[c]:
            num_params, overrides = sizes[size]
            total = round(c / (6.0 * num_params) / tokens_per_step)
            branch_start = int((1 - cooldown) * total)
            if branch_start < 1 or total - branch_start < 1:
                raise UsageError(f"budget {c:.3g} for size {size}: {total} steps in all, too "
                                 "few for a stable phase and a cooldown; raise the budget")
            segment = last_segment.get(size)
            if segment is None or points[segment]["steps"] < branch_start:
                start = points[segment]["steps"] if segment is not None else 0
                points.append({"role": "stable", "size": size, "budget": c,
                               "steps": branch_start, "start": start, "source": segment,
                               "overrides": overrides})
                segment = last_segment[size] = len(points) - 1
            elif points[segment]["steps"] > branch_start:
                raise UsageError(f"budget {c:.3g} for size {size}: its branch would start at "
                                 f"step {branch_start}, before the stable phase's "
                                 f"{points[segment]['steps']} of a smaller budget; list "
                                 "budgets so that D grows with C for every size")
            points.append({"role": "cooldown", "size": size, "budget": c, "steps": total,
                           "start": branch_start, "source": segment, "overrides": overrides})
    return points


def sweep_overrides(points: list[dict]) -> list[dict]:
    """The lmjax-sweep override dicts of `plan`'s points, in order. A point that continues
    another names that point's directory, as lmjax-sweep spells it from its overrides."""
    from lmjax.study.sweep import point_names
    overrides = [_overrides(p, "checkpoint:{root}/SOURCE@0" if p["source"] is not None else "")
                 for p in points]
    names = []
    for i, p in enumerate(points):
        if p["source"] is not None:
            overrides[i] = _overrides(p, f"checkpoint:{{root}}/{names[p['source']]}@{p['start']}")
        # A name depends only on its own overrides and the set of fields the sweep overrides.
        names.append(point_names(overrides)[i])
    return overrides


def _overrides(p: dict, init_from: str) -> dict:
    length = p["steps"] - p["start"]
    out = {"train.steps": p["steps"]}
    if p["role"] == "cooldown":
        out["optim.decay_start"] = p["start"]
    if init_from:
        out["init_from"] = init_from
    out.update(p["overrides"])
    if p["role"] == "stable":
        every = max(1, length // EVALS_PER_SEGMENT)
        out.update({"optim.schedule": "constant", "train.eval_every": every,
                    "train.checkpoint_every": every})
    else:
        out.update({"optim.schedule": "wsd", "train.eval_every": length,
                    "train.checkpoint_every": length})
    return out


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def collect(root: str, points: list[dict], names: list[str], out_dir: str) -> list[dict]:
    """results.csv and curves.csv of the sweep ROOT, whose point `names` are `points`."""
    from lmjax.study.plot import read_metrics
    rows, curves = [], []
    for p, name in zip(points, names):
        workdir = os.path.join(root, name)
        summary = _read_json(os.path.join(workdir, "summary.json")) or {}
        records = read_metrics(workdir)
        num_params = summary.get("num_params") or p.get("num_params")
        row = {"name": name, "role": p["role"], "size": p["size"],
               "num_params": num_params,
               "non_embedding_params": p.get("non_embedding_params", ""),
               "tokens": summary.get("tokens", p["steps"] * p.get("tokens_per_step", 0)),
               "flops_budget": p["budget"],
               "steps": p["steps"], "decay_start": p["start"] if p["role"] == "cooldown" else "",
               "eval_loss": summary.get("eval_loss", ""),
               "train_loss": summary.get("train_loss", ""),
               "wall_time_s": summary.get("wall_time_s", ""),
               "status": "done" if summary else ("running" if records else "pending")}
        rows.append(row)
        if p["source"] is not None and records:
            # The curve starts where it left its source: the source's eval at that step.
            source = read_metrics(os.path.join(root, names[p["source"]]))
            records = [r for r in source if r["step"] == p["start"]] + records
        for record in records:
            if "eval_loss" in record:
                curves.append({"run": name, "role": p["role"], "size": p["size"],
                               "num_params": num_params, "step": record["step"],
                               "tokens": record.get("tokens", record["step"]
                                                    * p.get("tokens_per_step", 0)),
                               "eval_loss": record["eval_loss"]})
    os.makedirs(out_dir, exist_ok=True)
    write_csv(os.path.join(out_dir, "results.csv"), RESULT_FIELDS, rows)
    write_csv(os.path.join(out_dir, "curves.csv"),
              ("run", "role", "size", "num_params", "step", "tokens", "eval_loss"), curves)
    return rows


def read_csv(path: str) -> list[dict]:
    """The rows of a results.csv or curves.csv, as dicts of strings."""
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError as e:
        raise UsageError(f"cannot read {path} ({e.strerror})") from None


def write_csv(path: str, fields, rows) -> None:
    """A CSV written beside `path` and renamed, so a reader never sees half of it; floats to 6
    significant digits."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m lmjax.study.wsd", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="experiments/STUDY.py[:ARG] whose "
                        "study_points(arg) returns its plan() points")
    parser.add_argument("--workdir", required=True, help="the study's lmjax-sweep ROOT")
    parser.add_argument("--out", required=True, help="directory for results.csv, curves.csv")
    args = parser.parse_args(argv)
    from lmjax import config as config_lib
    path, _, arg = args.config.partition(":")
    try:
        if not os.path.isfile(path):
            raise UsageError(f"--config: {path!r} does not exist")
        module = config_lib.load_module(path)
        if not hasattr(module, "study_points"):
            raise UsageError(f"--config: {path} has no study_points(arg) function")
        from lmjax.study.sweep import point_names
        points = module.study_points(arg or None)
        names = point_names(sweep_overrides(points))
        rows = collect(args.workdir, points, names, args.out)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    done = sum(r["status"] == "done" for r in rows)
    print(f"{done} of {len(rows)} runs finished; wrote {args.out}/results.csv and curves.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
