"""The lmjax command a launcher runs on every host, checked here before any machine is touched.

A config that does not fit the target's device count (a mesh of the wrong size, a batch the
data axis cannot split) fails on the laptop in a second, not on the pod after a queue and a
compile.
"""
import shlex

from lmjax import config as config_lib, validation
from lmjax.errors import UsageError

ENTRY_POINTS = ("lmjax-train", "lmjax-sweep")


def split_at_dashes(argv) -> tuple[list[str], list[str]]:
    """(launcher flags, job command): everything after a bare `--` is the job's own command."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def flag_value(argv, name):
    """Value of --name=V or --name V in argv, else None."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def check(command: list[str], num_devices: int | None, shared_workdir: bool) -> list[str]:
    """Validates `lmjax-train|lmjax-sweep --config=... --workdir=...` for num_devices devices.

    Returns the command to run: for a sweep, with --num_devices added, so that each host checks
    meshes against the whole slice rather than its own chips. Raises UsageError.
    """
    if not command:
        raise UsageError("no command to run; put it after --, e.g. -- lmjax-train "
                         "--config=experiments/llama_1b.py --workdir=gs://BUCKET/run")
    if command[0] not in ENTRY_POINTS:
        raise UsageError(f"command {command[0]!r}: launchers run {' or '.join(ENTRY_POINTS)}; "
                         "start the command after -- with one of them")
    spec, workdir = flag_value(command, "config"), flag_value(command, "workdir")
    if not spec or not workdir:
        missing = "--config" if not spec else "--workdir"
        raise UsageError(f"{command[0]}: {missing} is required in the command after --")
    if shared_workdir and not workdir.startswith("gs://"):
        raise UsageError(f"--workdir={workdir}: hosts of a multi-host job share no disk; use a "
                         "bucket, --workdir=gs://BUCKET/PATH")
    if command[0] == "lmjax-train":
        from lmjax.main import parse_train_args
        cfg = parse_train_args(command[1:])[0]  # lmjax-train's own parsing: same errors
        if num_devices:
            with cfg.unlocked():
                cfg.data.path = ""  # the data lives on the hosts, not here
            validation.validate(cfg, num_devices)
        return list(command)
    from lmjax.study import sweep
    overrides, rest = config_lib.split_overrides(command[1:])
    args = sweep.parse_args(rest)
    if num_devices:
        if args.num_devices and args.num_devices != num_devices:
            raise UsageError(f"lmjax-sweep --num_devices={args.num_devices}: the target has "
                             f"{num_devices} devices; drop the flag")
        sweep.plan(spec, workdir, overrides, num_devices, args.only, check_data=False)
        if not args.num_devices:
            return list(command) + [f"--num_devices={num_devices}"]
    else:
        sweep.collect(spec)
    return list(command)


def quote(command: list[str]) -> str:
    return shlex.join(command)
