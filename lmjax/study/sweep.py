"""Sweeps: an experiment file's `sweep(add, arg=None)` expanded into points, run N at a time.

    lmjax-sweep --config=experiments/NAME.py[:ARG] --workdir=ROOT [--parallel=N] [--dry_run]
                [--only=GLOB] [--num_devices=N] [--config.FIELD=VALUE ...]

The experiment file calls `add(**overrides)` once per point, with dotted field names
(`add(**{"model.d_model": 64, "optim.lr": 3e-3})`) or groups (`add(model={"d_model": 64})`).
Every point is validated (unknown field, wrong type, bad mesh) before anything runs. Each point
trains with `lmjax-train` in ROOT/<name>, the name spelled from its overrides; a point whose
summary.json exists is finished and skipped, any other resumes from its checkpoints. A failing
point does not stop the others. In a string override `{root}` stands for ROOT: a point with
init_from=checkpoint:{root}/NAME@STEP branches from point NAME's checkpoint and starts only once
NAME has finished. ROOT/results.csv, ROOT/results.png (eval loss against the swept
fields) and ROOT/curves.png (every point's loss curves) are rewritten as points finish.
"""
import copy
import fnmatch
import hashlib
import inspect
import os
import re
import sys

from lmjax import config as config_lib, validation
from lmjax.cli import ArgumentParser
from lmjax.errors import ConfigError
from lmjax.errors import UsageError
from lmjax.study.runner import Point, run_points

_NAME_MAX = 120
ROOT = "{root}"  # in a string override: the sweep's ROOT


def _flatten(overrides: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in overrides.items():
        key = key[len("config."):] if key.startswith("config.") and not prefix else key
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + key + "."))
        else:
            flat[prefix + key] = value
    return flat


def collect(spec: str) -> list[dict]:
    """The override dicts that `sweep(add, arg)` of the experiment file adds, in order."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"--config: experiment file {path!r} does not exist; pass a path such "
                          "as experiments/scaling_tiny.py")
    module = config_lib.load_module(path)
    sweep_fn = getattr(module, "sweep", None)
    if not callable(sweep_fn):
        raise ConfigError(f"--config: {path} has no sweep(add, arg=None) function; define one "
                          "next to get_config that calls add(**overrides) once per point")
    points = []

    def add(**overrides):
        points.append(_flatten(overrides))

    if len(inspect.signature(sweep_fn).parameters) >= 2:
        sweep_fn(add, arg or None)
    elif arg:
        raise ConfigError(f"--config={spec}: {path}'s sweep(add) takes no argument; drop "
                          f":{arg} or define sweep(add, arg=None)")
    else:
        sweep_fn(add)
    if not points:
        raise ConfigError(f"--config={spec}: sweep() added no points; call add(**overrides) "
                          "once per point")
    return points


def format_value(value) -> str:
    """The command-line text lmjax.config.parse_value turns back into `value`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return repr(tuple(value))
    return str(value) if not isinstance(value, float) else repr(value)


def _short_value(value) -> str:
    text = f"{value:g}" if isinstance(value, float) else format_value(value)
    return re.sub(r"[^A-Za-z0-9._+\-]", "_", text)


def point_names(points: list[dict]) -> list[str]:
    """Directory names spelled from the overrides, with fields' last parts where unambiguous."""
    fields = sorted({f for p in points for f in p})
    short = {}
    for field in fields:
        leaf = field.split(".")[-1]
        clashes = [f for f in fields if f.split(".")[-1] == leaf]
        short[field] = leaf if len(clashes) == 1 else field
    names = []
    for overrides in points:
        name = ",".join(f"{short[f]}={_short_value(v)}" for f, v in overrides.items()) or "base"
        if len(name) > _NAME_MAX:
            digest = hashlib.sha1(name.encode()).hexdigest()[:10]
            name = name[:_NAME_MAX - 11] + "-" + digest
        names.append(name)
    return names


def probe_device_count() -> int:
    """Devices lmjax-train will see, counted in a child so this process never holds an
    accelerator the points need."""
    import subprocess
    result = subprocess.run([sys.executable, "-c", "import jax; print(jax.device_count())"],
                            capture_output=True, text=True)
    if result.returncode:
        raise UsageError("could not count devices (python -c 'import jax; jax.device_count()' "
                         "failed); pass --num_devices=N")
    return int(result.stdout.strip().splitlines()[-1])


def plan(spec: str, root: str, common: dict, num_devices: int, only: str = "",
         check_data: bool = True) -> list[Point]:
    """Validated points: every override applied and checked before any point runs.

    check_data=False skips the data path check, for a launcher whose data lives on the hosts.
    """
    base = config_lib.load_config(spec)
    config_lib.apply_overrides(base, common)
    points = collect(spec)
    names = point_names(points)
    seen = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"--config={spec}: sweep points {seen[name]} and {i} have the same "
                              f"overrides ({name}); make every point differ")
        seen[name] = i
    planned = []
    for i, (overrides, name) in enumerate(zip(points, names)):
        cfg = copy.deepcopy(base)
        try:
            config_lib.apply_overrides(cfg, overrides)
            checked = cfg
            if not check_data:
                checked = copy.deepcopy(cfg)
                with checked.unlocked():
                    checked.data.path = ""
            validation.validate(checked, num_devices)
        except ConfigError as e:
            raise ConfigError(f"sweep point {i} ({name}): {e}") from None
        typed = {}
        for field in overrides:
            value = cfg
            for part in field.split("."):
                value = value[part]
            typed[field] = value
        planned.append(Point(name=name, overrides=typed, workdir=os.path.join(root, name),
                             after=_source_point(typed.get("init_from", ""))))
    if only:
        if not any(fnmatch.fnmatchcase(p.name, only) for p in planned):
            raise UsageError(f"--only={only}: matches none of the points "
                             f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    return planned


def _source_point(init_from: str) -> str:
    """The point a branch starts from: NAME of init_from=checkpoint:{root}/NAME@STEP."""
    prefix = "checkpoint:" + ROOT + "/"
    if not init_from.startswith(prefix):
        return ""
    return init_from[len(prefix):].rpartition("@")[0]


def train_command(spec: str, point: Point, common: dict) -> list[str]:
    root = os.path.dirname(point.workdir)
    args = [sys.executable, "-m", "lmjax.train", f"--config={spec}", f"--workdir={point.workdir}"]
    for field, value in common.items():
        args.append(f"--config.{field}={value}")
    for field, value in point.overrides.items():
        args.append(f"--config.{field}={format_value(value).replace(ROOT, root)}")
    return args


def parse_args(argv):
    """lmjax-sweep's flags (the --config.FIELD=VALUE overrides already split off)."""
    parser = ArgumentParser(prog="lmjax-sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="experiments/NAME.py[:ARG] with sweep()")
    parser.add_argument("--workdir", required=True, help="ROOT: one sub-directory per point")
    parser.add_argument("--parallel", type=int, default=1, help="points running at once")
    parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--only", default="", help="run only points whose name matches GLOB")
    parser.add_argument("--num_devices", type=int, default=0,
                        help="devices each point trains on, for validating meshes (default: "
                             "count them; pass the pod's total for multi-host sweeps)")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        raise UsageError(f"--parallel={args.parallel}: must be >= 1")
    if args.num_devices < 0:
        raise UsageError(f"--num_devices={args.num_devices}: must be >= 1 (0 = count them)")
    return args


def main(argv=None) -> int:
    try:
        common, rest = config_lib.split_overrides(sys.argv[1:] if argv is None else argv)
        args = parse_args(rest)
        num_devices = args.num_devices or probe_device_count()
        points = plan(args.config, args.workdir, common, num_devices, args.only)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    commands = {p.name: train_command(args.config, p, common) for p in points}
    # --only limits what runs; results.csv still lists every point of the sweep.
    selected = {p.name for p in points
                if not args.only or fnmatch.fnmatchcase(p.name, args.only)}
    if args.dry_run:
        import shlex
        from etils import epath
        for p in (p for p in points if p.name in selected):
            finished = epath.Path(p.workdir, "summary.json").exists()
            print(("# finished, would skip\n# " if finished else "") + shlex.join(commands[p.name]))
        return 0
    failed = run_points(points, commands, args.workdir, parallel=args.parallel,
                        selected=selected)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
