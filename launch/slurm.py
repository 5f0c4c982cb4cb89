"""SLURM: write and submit an sbatch script for multi-node GPU training, one process per GPU.

    python launch/slurm.py --nodes=2 --gpus_per_node=8 [--partition=P] [--time=24:00:00] \\
        [--venv=/shared/lmjax/.venv] [--dry_run] \\
        -- lmjax-train --config=experiments/llama_1b.py --workdir=/shared/runs/llama_1b

srun starts nodes x gpus_per_node tasks. Each task is one jax process owning one GPU. The script
hands lmjax-train the jax.distributed settings explicitly (lmjax/distributed.py): the
coordinator on the job's first node (LMJAX_COORDINATOR), the process count (LMJAX_NUM_PROCESSES
= SLURM_NTASKS) and this task's rank (LMJAX_PROCESS_ID = SLURM_PROCID), so a missing coordinator
ends in a one-line error naming it rather than a hang; and the task's GPU (JAX_LOCAL_DEVICE_IDS =
SLURM_LOCALID, read by jax.distributed.initialize). --dry_run prints the script and the sbatch
command without writing or submitting anything.
"""
import os
import re
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import job_command  # noqa: E402
from lmjax.cli import ArgumentParser  # noqa: E402
from lmjax.errors import UsageError  # noqa: E402


def render(args, command: list[str]) -> str:
    """The sbatch script text."""
    directives = [
        f"--job-name={args.job_name}",
        f"--nodes={args.nodes}",
        f"--ntasks-per-node={args.gpus_per_node}",
        f"--gpus-per-node={args.gpus_per_node}",
        f"--cpus-per-task={args.cpus_per_task}",
        f"--time={args.time}",
        f"--output={os.path.join(args.log_dir, '%x-%j.out')}",
    ]
    if args.partition:
        directives.append(f"--partition={args.partition}")
    if args.account:
        directives.append(f"--account={args.account}")
    lines = ["#!/bin/bash"] + [f"#SBATCH {d}" for d in directives] + [
        "set -eo pipefail",
        f"cd {shlex.quote(args.chdir)}",
    ]
    if args.venv:
        lines.append(f"source {shlex.quote(os.path.join(args.venv, 'bin', 'activate'))}")
    for kv in args.env:
        lines.append(f"export {shlex.quote(kv)}")
    lines += [
        # sed reads every line: `head -n 1` could make scontrol die of SIGPIPE under pipefail.
        "# The first node of the job hosts the jax.distributed coordinator.",
        'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
        f'export LMJAX_COORDINATOR="$head_node:{args.port}"',
        'echo "job $SLURM_JOB_ID: $SLURM_NNODES nodes, $SLURM_NTASKS processes, coordinator '
        '$LMJAX_COORDINATOR"',
        "# One task per GPU; each reads its rank and its GPU from its own environment.",
        "srun --kill-on-bad-exit=1 bash -c "
        + shlex.quote("export LMJAX_PROCESS_ID=$SLURM_PROCID LMJAX_NUM_PROCESSES=$SLURM_NTASKS "
                      "JAX_LOCAL_DEVICE_IDS=$SLURM_LOCALID; exec "
                      + job_command.quote(command)),
    ]
    return "\n".join(lines) + "\n"


def build_parser():
    parser = ArgumentParser(prog="launch/slurm.py", description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--gpus_per_node", type=int, required=True)
    parser.add_argument("--job_name", default="lmjax")
    parser.add_argument("--partition", default="")
    parser.add_argument("--account", default="")
    parser.add_argument("--time", default="24:00:00", help="wall-clock limit, HH:MM:SS")
    parser.add_argument("--cpus_per_task", type=int, default=8)
    parser.add_argument("--port", type=int, default=12355, help="coordinator port")
    parser.add_argument("--chdir", default=os.getcwd(), help="directory the job runs in (the "
                        "lmjax checkout, so experiments/ resolves); default: here")
    parser.add_argument("--venv", default="", help="virtualenv to activate on every node")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for every task")
    parser.add_argument("--log_dir", default="slurm_logs", help="where SLURM writes job output")
    parser.add_argument("--script", default="", help="where to write the script "
                        "(default: LOG_DIR/JOB_NAME.sbatch)")
    parser.add_argument("--dry_run", action="store_true",
                        help="print the script and the sbatch command; write and submit nothing")
    return parser


def main(argv=None) -> int:
    argv, command = job_command.split_at_dashes(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.nodes < 1 or args.gpus_per_node < 1:
            raise UsageError(f"--nodes={args.nodes} --gpus_per_node={args.gpus_per_node}: both "
                             "must be >= 1")
        if not re.fullmatch(r"(\d+-)?\d{1,2}(:\d{2}){0,2}", args.time):
            raise UsageError(f"--time={args.time}: expected a SLURM time such as 24:00:00 or "
                             "2-00:00:00")
        for kv in args.env:
            if "=" not in kv:
                raise UsageError(f"--env={kv}: expected KEY=VALUE")
        devices = args.nodes * args.gpus_per_node
        # Nodes of a cluster usually share a filesystem, so a local workdir is allowed here.
        command = job_command.check(command, devices, shared_workdir=False)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    script = render(args, command)
    path = args.script or os.path.join(args.log_dir, f"{args.job_name}.sbatch")
    submit = ["sbatch", path]
    if args.dry_run:
        print(script, end="")
        print(f"# {shlex.join(submit)}")
        return 0
    os.makedirs(args.log_dir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(script)
    print(f"wrote {path}")
    print(shlex.join(submit), flush=True)
    try:
        return subprocess.run(submit).returncode
    except FileNotFoundError:
        print("error: sbatch not found; run this on a SLURM login node, or use --dry_run",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
