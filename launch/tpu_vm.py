"""Cloud TPU VMs: create a slice, install lmjax on every worker, run one command on all of them.

    python launch/tpu_vm.py create --name=NAME --zone=ZONE --accelerator_type=v5litepod-16 [--spot]
    python launch/tpu_vm.py setup  --name=NAME --zone=ZONE [--source=.|git+https://...]
    python launch/tpu_vm.py copy   --name=NAME --zone=ZONE LOCAL_PATH REMOTE_PATH
    python launch/tpu_vm.py run    --name=NAME --zone=ZONE --accelerator_type=v5litepod-16 \\
        -- lmjax-train --config=experiments/llama_1b.py --workdir=gs://BUCKET/llama_1b
    python launch/tpu_vm.py run --plan ...   (lmjax-plan first: refuses a job that cannot fit)
    python launch/tpu_vm.py logs   --name=NAME --zone=ZONE [--worker=0] [--follow]
    python launch/tpu_vm.py stop   --name=NAME --zone=ZONE
    python launch/tpu_vm.py delete --name=NAME --zone=ZONE

Every subcommand takes --dry_run, which prints the exact commands and runs nothing. `run` starts
the same command on every worker (`gcloud compute tpus tpu-vm ssh --worker=all`) in the
background, output in ~/lmjax-run.log on each worker, and returns; jax on each worker joins the
slice through jax.distributed, which needs no arguments on Cloud TPU. See launch/README.md.
"""
import json
import os
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import job_command  # noqa: E402
from lmjax.cli import ArgumentParser  # noqa: E402
from lmjax.errors import UsageError  # noqa: E402

REMOTE_DIR = "~/lmjax"
LOG = "~/lmjax-run.log"
PID = "~/lmjax-run.pid"
SOURCE_ARCHIVE = "lmjax-src.tar.gz"

# Per generation: the TPU VM runtime (software) version Google documents for it, devices (what
# jax.device_count() reports) per unit of the accelerator type's number, and the largest
# single-host slice, beyond which every worker (host) holds 4 chips.
GENERATIONS = {
    "v2": {"version": "tpu-ubuntu2204-base", "devices_per_unit": 1.0, "per_host": 8},
    "v3": {"version": "tpu-ubuntu2204-base", "devices_per_unit": 1.0, "per_host": 8},
    # v4 and v5p count TensorCores, two per chip, and jax sees one device per chip (megacore).
    "v4": {"version": "tpu-ubuntu2204-base", "devices_per_unit": 0.5, "per_host": 4},
    "v5p": {"version": "v2-alpha-tpuv5", "devices_per_unit": 0.5, "per_host": 4},
    "v5litepod": {"version": "v2-alpha-tpuv5-lite", "devices_per_unit": 1.0, "per_host": 4,
                  "single_host_max": 8},
    "v6e": {"version": "v2-alpha-tpuv6e", "devices_per_unit": 1.0, "per_host": 4,
            "single_host_max": 8},
}
ALIASES = {"v5e": "v5litepod"}


def topology(accelerator_type: str) -> tuple[str, int, int]:
    """(gcloud accelerator type, jax devices, workers) of e.g. 'v5litepod-16' or 'v5e-16'."""
    generation, _, count = accelerator_type.rpartition("-")
    generation = ALIASES.get(generation, generation)
    if generation not in GENERATIONS or not count.isdigit() or int(count) < 1:
        raise UsageError(f"--accelerator_type={accelerator_type}: expected GENERATION-SIZE with "
                         f"GENERATION one of {', '.join(list(GENERATIONS) + list(ALIASES))}, "
                         "e.g. v5litepod-16, v5p-64, v6e-256, v4-32")
    g = GENERATIONS[generation]
    devices = max(1, int(int(count) * g["devices_per_unit"]))
    if devices <= g.get("single_host_max", g["per_host"]):
        workers = 1
    else:
        workers = devices // g["per_host"]
    return f"{generation}-{count}", devices, workers


class Gcloud:
    """Builds `gcloud compute tpus tpu-vm ...` commands for one TPU VM."""

    def __init__(self, name: str, zone: str, project: str = ""):
        self.name, self.zone, self.project = name, zone, project

    def _tail(self):
        return [f"--zone={self.zone}"] + ([f"--project={self.project}"] if self.project else [])

    def tpu_vm(self, verb, *args):
        return ["gcloud", "compute", "tpus", "tpu-vm", verb, self.name, *args, *self._tail()]

    def ssh(self, remote_command: str, worker: str = "all"):
        return self.tpu_vm("ssh", f"--worker={worker}", f"--command={remote_command}")

    def scp(self, local: str, remote: str, recurse: bool = False):
        return ["gcloud", "compute", "tpus", "tpu-vm", "scp", *(["--recurse"] if recurse else []),
                local, f"{self.name}:{remote}", "--worker=all", *self._tail()]


def _remote_path(path: str) -> str:
    """~/x -> "$HOME/x": the worker's shell expands it, and nothing in it globs or splits."""
    if path.startswith("~/"):
        rest = path[2:]
        if any(ch in rest for ch in '"$`\\'):
            raise UsageError(f"{path}: remote paths may not contain quotes, $ or backslashes")
        return f'"$HOME/{rest}"'
    return shlex.quote(path)


def create_commands(args, gcloud: Gcloud):
    accelerator, devices, workers = topology(args.accelerator_type)
    generation = accelerator.rpartition("-")[0]
    version = args.version or GENERATIONS[generation]["version"]
    command = gcloud.tpu_vm("create", f"--accelerator-type={accelerator}", f"--version={version}")
    if args.spot:
        command.append("--spot")
    if args.preemptible:
        command.append("--preemptible")
    print(f"# {accelerator}: {devices} devices on {workers} worker(s)")
    return [command]


def setup_commands(args, gcloud: Gcloud):
    if args.source.startswith("git+"):
        url = args.source[len("git+"):]
        head, _, last = url.rpartition("/")
        ref = ""
        if "@" in last:  # git+https://HOST/REPO@REF
            last, _, ref = last.partition("@")
            url = f"{head}/{last}"
        fetch = (f"rm -rf {_remote_path(REMOTE_DIR)} && git clone -q {shlex.quote(url)} "
                 f"{_remote_path(REMOTE_DIR)}")
        if ref:
            fetch += f" && git -C {_remote_path(REMOTE_DIR)} checkout -q {shlex.quote(ref)}"
        local = []
    else:
        source = os.path.abspath(args.source)
        if not os.path.isfile(os.path.join(source, "setup.py")):
            raise UsageError(f"--source={args.source}: no setup.py there; pass the lmjax "
                             "checkout (default .) or git+https://HOST/REPO[@REF]")
        archive = os.path.join(args.tmp_dir, SOURCE_ARCHIVE)
        # The working tree as it is (uncommitted edits included), without caches and runs.
        local = [["tar", "-czf", archive, "--exclude=.git", "--exclude=.venv",
                  "--exclude=__pycache__", "--exclude=runs", "-C", source, "."],
                 gcloud.scp(archive, f"~/{SOURCE_ARCHIVE}")]
        fetch = (f"rm -rf {_remote_path(REMOTE_DIR)} && mkdir -p {_remote_path(REMOTE_DIR)} && "
                 f"tar -xzf {_remote_path('~/' + SOURCE_ARCHIVE)} -C {_remote_path(REMOTE_DIR)}")
    install = (f"python3 -m pip install -q --upgrade pip && python3 -m pip install -q -e "
               f"{_remote_path(REMOTE_DIR + '[tpu]')} && "
               "python3 -c 'import jax; print(jax.process_index(), jax.local_device_count())'")
    return local + [gcloud.ssh(f"set -e; {fetch} && {install}")]


def copy_commands(args, gcloud: Gcloud):
    if not os.path.exists(args.local):
        raise UsageError(f"copy: {args.local}: no such file or directory")
    return [gcloud.scp(args.local, args.remote, recurse=os.path.isdir(args.local))]


def plan_check(accelerator_type: str, command: list[str]):
    """Runs lmjax-plan for the slice and the job's config; UsageError, with its numbers, if the
    train step cannot fit."""
    if not accelerator_type or command[0] != "lmjax-train":
        raise UsageError("run --plan: needs --accelerator_type and an lmjax-train command")
    flags = [a for a in command[1:] if a.startswith("--config")]
    plan = subprocess.run([sys.executable, "-m", "lmjax.plan", f"--target={accelerator_type}",
                           *flags], capture_output=True, text=True)
    if plan.returncode == 2:  # the planner's own one-line error
        raise UsageError(plan.stderr.strip().removeprefix("error: "))
    print(plan.stdout, end="", flush=True)
    try:
        record = json.loads(plan.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise UsageError(f"run --plan: lmjax-plan failed (exit {plan.returncode}): "
                         f"{plan.stderr.strip()[-500:]}") from None
    if not record["fits"]:
        gib = 2 ** 30
        raise UsageError(
            f"run --plan: refused: the train step needs {record['memory']['total'] / gib:.2f} GiB "
            f"per chip of {record['limit_bytes'] / gib:.2f} GiB and does not fit by "
            f"{-record['headroom_bytes'] / gib:.2f} GiB; to fit: {record['advice']}")


def run_commands(args, gcloud: Gcloud):
    devices, workers = None, None
    if args.accelerator_type:
        _, devices, workers = topology(args.accelerator_type)
    command = job_command.check(args.command, devices, shared_workdir=workers != 1)
    if args.plan:
        plan_check(args.accelerator_type, command)
    exports = "".join(f"export {shlex.quote(kv)}; " for kv in args.env)
    # `nohup ... &` keeps the job alive after ssh returns; $! is the job itself (nohup execs it).
    remote = (f"cd {_remote_path(REMOTE_DIR)} || exit 1; export PATH=\"$HOME/.local/bin:$PATH\"; "
              f"{exports}nohup {job_command.quote(command)} > {_remote_path(LOG)} 2>&1 "
              f"< /dev/null & echo $! > {_remote_path(PID)}")
    if args.attach:
        remote = (f"cd {_remote_path(REMOTE_DIR)} || exit 1; export PATH=\"$HOME/.local/bin:"
                  f"$PATH\"; {exports}{job_command.quote(command)} 2>&1 | tee {_remote_path(LOG)}")
    return [gcloud.ssh(remote)]


def logs_commands(args, gcloud: Gcloud):
    follow = " -f" if args.follow else ""
    return [gcloud.ssh(f"tail -n {args.lines}{follow} {_remote_path(LOG)}", worker=args.worker)]


def stop_commands(args, gcloud: Gcloud):
    # SIGTERM: lmjax-train writes a checkpoint before it exits.
    return [gcloud.ssh(f"test -f {_remote_path(PID)} && kill -TERM \"$(cat {_remote_path(PID)})\" "
                       "|| true")]


def delete_commands(args, gcloud: Gcloud):
    return [gcloud.tpu_vm("delete", "--quiet")]


def build_parser():
    parser = ArgumentParser(prog="launch/tpu_vm.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)

    def add(name, builder, help_text):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--name", required=True, help="TPU VM name")
        p.add_argument("--zone", required=True, help="e.g. us-west4-a")
        p.add_argument("--project", default="", help="GCP project (default: gcloud's)")
        p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
        p.set_defaults(builder=builder)
        return p

    p = add("create", create_commands, "create a TPU VM slice")
    p.add_argument("--accelerator_type", required=True, help="e.g. v5litepod-16, v5p-64, v6e-8")
    p.add_argument("--version", default="", help="runtime version (default: per generation)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--spot", action="store_true", help="spot VM: cheaper, can be preempted")
    kind.add_argument("--preemptible", action="store_true", help="preemptible (older form)")

    p = add("setup", setup_commands, "install lmjax on every worker")
    p.add_argument("--source", default=".", help="lmjax checkout to copy, or git+URL[@REF]")
    p.add_argument("--tmp_dir", default="/tmp", help="where the source archive is built")

    p = add("copy", copy_commands, "copy a file or directory to every worker")
    p.add_argument("local")
    p.add_argument("remote")

    p = add("run", run_commands, "run one lmjax command on every worker")
    p.add_argument("--accelerator_type", default="",
                   help="the slice's type, to check the config against its device count")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE set on every worker")
    p.add_argument("--attach", action="store_true",
                   help="stream the output instead of running in the background")
    p.add_argument("--plan", action="store_true",
                   help="first compile the train step for the slice with lmjax-plan (here, no "
                        "TPU needed) and refuse a job that cannot fit")

    p = add("logs", logs_commands, "show ~/lmjax-run.log of one worker")
    p.add_argument("--worker", default="0", help="worker index, or all")
    p.add_argument("--lines", type=int, default=100)
    p.add_argument("--follow", action="store_true")

    add("stop", stop_commands, "send SIGTERM to the running job on every worker")
    add("delete", delete_commands, "delete the TPU VM")
    return parser


def main(argv=None) -> int:
    argv, command = job_command.split_at_dashes(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command = command
    try:
        if command and args.action != "run":
            raise UsageError(f"{args.action}: takes no command after --")
        if args.action == "run" and not command:
            job_command.check(command, None, True)
        for kv in getattr(args, "env", []):
            if "=" not in kv:
                raise UsageError(f"--env={kv}: expected KEY=VALUE")
        commands = args.builder(args, Gcloud(args.name, args.zone, args.project))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for c in commands:
        print(shlex.join(c), flush=True)
        if args.dry_run:
            continue
        try:
            result = subprocess.run(c)
        except FileNotFoundError:
            print(f"error: {c[0]} not found; install the Google Cloud CLI (gcloud) and run "
                  "`gcloud auth login`", file=sys.stderr)
            return 2
        if result.returncode:
            print(f"error: exit {result.returncode} from: {shlex.join(c)}", file=sys.stderr)
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
