"""launch/slurm.py: the exact sbatch script for 2 nodes x 8 GPUs, executed under a fake SLURM."""
import os
import stat
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLURM = os.path.join(REPO, "launch", "slurm.py")
TRAIN = ["lmjax-train", "--config=experiments/shakespeare_char.py", "--workdir=/shared/runs/sc",
         "--config.train.batch_size=16"]
FLAGS = ["--nodes=2", "--gpus_per_node=8", "--partition=gpu", "--chdir=/shared/lmjax",
         "--venv=/shared/lmjax/.venv", "--time=12:00:00"]

EXPECTED = """\
#!/bin/bash
#SBATCH --job-name=lmjax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=slurm_logs/%x-%j.out
#SBATCH --partition=gpu
set -eo pipefail
cd /shared/lmjax
source /shared/lmjax/.venv/bin/activate
# The first node of the job hosts the jax.distributed coordinator.
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)
export LMJAX_COORDINATOR="$head_node:12355"
echo "job $SLURM_JOB_ID: $SLURM_NNODES nodes, $SLURM_NTASKS processes, coordinator $LMJAX_COORDINATOR"
# One task per GPU; each reads its rank and its GPU from its own environment.
srun --kill-on-bad-exit=1 bash -c 'export LMJAX_PROCESS_ID=$SLURM_PROCID LMJAX_NUM_PROCESSES=$SLURM_NTASKS JAX_LOCAL_DEVICE_IDS=$SLURM_LOCALID; exec lmjax-train --config=experiments/shakespeare_char.py --workdir=/shared/runs/sc --config.train.batch_size=16'
"""


def slurm(*args, env=None, cwd=REPO):
    return subprocess.run([sys.executable, SLURM, *args], capture_output=True, text=True, cwd=cwd,
                          env=env)


def test_dry_run_prints_the_script_for_2_nodes_x_8_gpus():
    out = slurm(*FLAGS, "--dry_run", "--", *TRAIN)
    assert out.returncode == 0, out.stderr
    assert out.stdout == EXPECTED + "# sbatch slurm_logs/lmjax.sbatch\n"


def _executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_script_gives_each_of_16_tasks_its_rank_gpu_and_the_first_node(tmp_path):
    """Submits with a fake sbatch, then runs the written script under fake scontrol/srun that
    start 16 tasks the way SLURM does, each with its own SLURM_PROCID/SLURM_LOCALID."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "sbatch", "#!/bin/bash\necho \"Submitted batch job 42 ($1)\"\n")
    _executable(bin_dir / "scontrol", textwrap.dedent("""\
        #!/bin/bash
        [ "$1 $2 $3" = "show hostnames gpu[07-08]" ] || exit 1
        printf 'gpu07\\ngpu08\\n'
    """))
    _executable(bin_dir / "srun", textwrap.dedent("""\
        #!/bin/bash
        [ "$1" = "--kill-on-bad-exit=1" ] || exit 1
        shift
        for node in 0 1; do for local in 0 1 2 3 4 5 6 7; do
          SLURM_PROCID=$((node * 8 + local)) SLURM_LOCALID=$local SLURM_NODEID=$node "$@"
        done; done
    """))
    _executable(bin_dir / "lmjax-train", textwrap.dedent("""\
        #!/bin/bash
        echo "$LMJAX_COORDINATOR $LMJAX_PROCESS_ID/$LMJAX_NUM_PROCESSES gpu $JAX_LOCAL_DEVICE_IDS venv $VIRTUAL_ENV in $PWD: $*"
    """))
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f"export VIRTUAL_ENV={venv}\n")
    job_dir = tmp_path / "checkout"
    job_dir.mkdir()
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    flags = ["--nodes=2", "--gpus_per_node=8", f"--chdir={job_dir}", f"--venv={venv}",
             f"--log_dir={tmp_path / 'logs'}"]
    out = slurm(*flags, "--", *TRAIN, env=env)
    assert out.returncode == 0, out.stderr
    script = tmp_path / "logs" / "lmjax.sbatch"
    assert f"Submitted batch job 42 ({script})" in out.stdout

    slurm_env = dict(env, SLURM_JOB_ID="42", SLURM_JOB_NODELIST="gpu[07-08]", SLURM_NNODES="2",
                     SLURM_NTASKS="16")
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=slurm_env,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "job 42: 2 nodes, 16 processes, coordinator gpu07:12355"
    args = " ".join(TRAIN[1:])
    assert lines[1:] == [f"gpu07:12355 {rank}/16 gpu {rank % 8} venv {venv} in {job_dir}: {args}"
                         for rank in range(16)]


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    cases = [
        (["--gpus_per_node=8", "--", *TRAIN],
         "error: launch/slurm.py: the following arguments are required: --nodes; see "
         "launch/slurm.py --help"),
        (["--nodes=2", "--gpus_per_node=8", "--dry_run", "--", *TRAIN[:3]],
         "error: train.batch_size=12: not divisible by mesh.data*mesh.expert*mesh.fsdp=16; "
         "use a multiple of 16"),
        (["--nodes=2", "--gpus_per_node=8", "--time=forever", "--", *TRAIN],
         "error: --time=forever: expected a SLURM time such as 24:00:00 or 2-00:00:00"),
        (["--nodes=2", "--gpus_per_node=8"],
         "error: no command to run; put it after --, e.g. -- lmjax-train "
         "--config=experiments/llama_1b.py --workdir=gs://BUCKET/run"),
    ]
    for args, message in cases:
        out = slurm(f"--log_dir={tmp_path / 'logs'}", *args)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.strip().splitlines() == [message], args
    assert not (tmp_path / "logs").exists()  # nothing written
