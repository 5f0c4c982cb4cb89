"""launch/tpu_vm.py: the exact gcloud commands for a v5e-16 slice, and that they work in a shell."""
import os
import shlex
import stat
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_VM = os.path.join(REPO, "launch", "tpu_vm.py")
CONFIG = "experiments/shakespeare_char.py"
TRAIN = ["lmjax-train", f"--config={CONFIG}", "--workdir=gs://my-bucket/sc",
         "--config.train.batch_size=16"]
COMMON = ["--name=lm", "--zone=us-west4-a"]


def launch(*args, env=None):
    return subprocess.run([sys.executable, TPU_VM, *args], capture_output=True, text=True,
                          cwd=REPO, env=env)


def test_topology_of_accelerator_types():
    sys.path.insert(0, os.path.join(REPO, "launch"))
    import tpu_vm
    # (gcloud name, jax devices, workers) from Cloud TPU's documented slice shapes.
    assert tpu_vm.topology("v5e-16") == ("v5litepod-16", 16, 4)
    assert tpu_vm.topology("v5litepod-8") == ("v5litepod-8", 8, 1)
    assert tpu_vm.topology("v4-8") == ("v4-8", 4, 1)
    assert tpu_vm.topology("v4-32") == ("v4-32", 16, 4)
    assert tpu_vm.topology("v5p-128") == ("v5p-128", 64, 16)
    assert tpu_vm.topology("v6e-256") == ("v6e-256", 256, 64)
    assert tpu_vm.topology("v3-32") == ("v3-32", 32, 4)


def test_dry_run_commands_for_v5e_16():
    out = launch("create", *COMMON, "--accelerator_type=v5e-16", "--spot", "--dry_run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "# v5litepod-16: 16 devices on 4 worker(s)",
        "gcloud compute tpus tpu-vm create lm --accelerator-type=v5litepod-16 "
        "--version=v2-alpha-tpuv5-lite --zone=us-west4-a --spot"]

    out = launch("setup", *COMMON, f"--source={REPO}", "--tmp_dir=/tmp/x", "--dry_run")
    assert out.returncode == 0, out.stderr
    remote = ('set -e; rm -rf "$HOME/lmjax" && mkdir -p "$HOME/lmjax" && tar -xzf '
              '"$HOME/lmjax-src.tar.gz" -C "$HOME/lmjax" && python3 -m pip install -q --upgrade '
              'pip && python3 -m pip install -q -e "$HOME/lmjax[tpu]" && python3 -c '
              "'import jax; print(jax.process_index(), jax.local_device_count())'")
    assert out.stdout.splitlines() == [
        f"tar -czf /tmp/x/lmjax-src.tar.gz --exclude=.git --exclude=.venv --exclude=__pycache__ "
        f"--exclude=runs -C {REPO} .",
        "gcloud compute tpus tpu-vm scp /tmp/x/lmjax-src.tar.gz 'lm:~/lmjax-src.tar.gz' "
        "--worker=all --zone=us-west4-a",
        shlex.join(["gcloud", "compute", "tpus", "tpu-vm", "ssh", "lm", "--worker=all",
                    f"--command={remote}", "--zone=us-west4-a"])]

    out = launch("run", *COMMON, "--accelerator_type=v5e-16", "--dry_run", "--", *TRAIN)
    assert out.returncode == 0, out.stderr
    remote = ('cd "$HOME/lmjax" || exit 1; export PATH="$HOME/.local/bin:$PATH"; nohup '
              "lmjax-train --config=experiments/shakespeare_char.py --workdir=gs://my-bucket/sc "
              '--config.train.batch_size=16 > "$HOME/lmjax-run.log" 2>&1 < /dev/null & '
              'echo $! > "$HOME/lmjax-run.pid"')
    assert out.stdout.splitlines() == [shlex.join(
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "lm", "--worker=all", f"--command={remote}",
         "--zone=us-west4-a"])]

    out = launch("logs", *COMMON, "--follow", "--dry_run")
    assert out.stdout.splitlines() == [
        "gcloud compute tpus tpu-vm ssh lm --worker=0 "
        "'--command=tail -n 100 -f \"$HOME/lmjax-run.log\"' --zone=us-west4-a"]
    out = launch("delete", *COMMON, "--dry_run")
    assert out.stdout.splitlines() == [
        "gcloud compute tpus tpu-vm delete lm --quiet --zone=us-west4-a"]


def test_sweep_on_a_slice_checks_points_for_the_slice_devices(tmp_path):
    experiment = tmp_path / "exp.py"
    experiment.write_text(textwrap.dedent("""
        from lmjax.config import base_config
        def get_config(arg=None):
            c = base_config()
            c.train.batch_size = 16
            return c
        def sweep(add, arg=None):
            add(**{"optim.lr": 1e-3})
            add(**{"optim.lr": 3e-3, "train.batch_size": 12})
    """))
    out = launch("run", *COMMON, "--accelerator_type=v5e-16", "--dry_run", "--", "lmjax-sweep",
                 f"--config={experiment}", "--workdir=gs://b/sweep")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: sweep point 1 (lr=0.003,batch_size=12): train.batch_size=12: not divisible by "
        "mesh.data*mesh.expert*mesh.fsdp=16; use a multiple of 16"]


def _fake_gcloud(bin_dir, workers):
    """A gcloud that records its arguments and runs `ssh --command` once per fake worker, each
    worker with its own HOME, as gcloud's --worker=all does on a slice."""
    script = bin_dir / "gcloud"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, subprocess, sys
        root = os.environ["FAKE_TPU_ROOT"]
        with open(os.path.join(root, "gcloud_calls.jsonl"), "a") as f:
            f.write(json.dumps(sys.argv[1:]) + "\\n")
        args = sys.argv[1:]
        if args[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
            command = next(a.split("=", 1)[1] for a in args if a.startswith("--command="))
            worker = next(a.split("=", 1)[1] for a in args if a.startswith("--worker="))
            for w in (range({workers}) if worker == "all" else [int(worker)]):
                home = os.path.join(root, f"worker{{w}}")
                env = dict(os.environ, HOME=home)
                subprocess.run(["bash", "-c", command], env=env, check=True)
    """))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_run_starts_the_same_command_on_every_worker(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_gcloud(bin_dir, workers=4)
    for w in range(4):
        # What `setup` leaves on a worker: the checkout and lmjax-train in ~/.local/bin.
        (tmp_path / f"worker{w}" / "lmjax").mkdir(parents=True)
        local_bin = tmp_path / f"worker{w}" / ".local" / "bin"
        local_bin.mkdir(parents=True)
        stub = local_bin / "lmjax-train"
        stub.write_text('#!/bin/bash\necho "pid $$ in $PWD: $*"\nsleep 0.2\n')
        stub.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               FAKE_TPU_ROOT=str(tmp_path))
    out = launch("run", *COMMON, "--accelerator_type=v5e-16", "--", *TRAIN, env=env)
    assert out.returncode == 0, out.stderr
    dry = launch("run", *COMMON, "--accelerator_type=v5e-16", "--dry_run", "--", *TRAIN)
    # It ran exactly what --dry_run prints.
    calls = (tmp_path / "gcloud_calls.jsonl").read_text().splitlines()
    assert [shlex.join(["gcloud", *__import__("json").loads(c)]) for c in calls] == \
        dry.stdout.splitlines()
    import time
    for w in range(4):
        home = tmp_path / f"worker{w}"
        log, pid = home / "lmjax-run.log", home / "lmjax-run.pid"
        deadline = time.time() + 10
        while time.time() < deadline and "pid" not in (log.read_text() if log.exists() else ""):
            time.sleep(0.05)
        # The background job is the command itself: its pid is the one `stop` will signal.
        assert log.read_text().strip() == (
            f"pid {pid.read_text().strip()} in {home / 'lmjax'}: {shlex.join(TRAIN[1:])}")


@pytest.mark.parametrize("args, message", [
    (["create", "--name=lm", "--zone=z"],
     "error: launch/tpu_vm.py create: the following arguments are required: "
     "--accelerator_type; see launch/tpu_vm.py create --help"),
    (["run", "--zone=z", "--", *TRAIN],
     "error: launch/tpu_vm.py run: the following arguments are required: --name; "
     "see launch/tpu_vm.py run --help"),
    (["run", *COMMON, "--accelerator_type=v5e-16", "--", "lmjax-train", f"--config={CONFIG}",
      "--workdir=/tmp/local", "--config.train.batch_size=16"],
     "error: --workdir=/tmp/local: hosts of a multi-host job share no disk; use a bucket, "
     "--workdir=gs://BUCKET/PATH"),
    (["run", *COMMON, "--accelerator_type=v5e-16", "--", *TRAIN[:3]],
     "error: train.batch_size=12: not divisible by mesh.data*mesh.expert*mesh.fsdp=16; "
     "use a multiple of 16"),
    (["run", *COMMON, "--accelerator_type=v9-8", "--", *TRAIN],
     "error: --accelerator_type=v9-8: expected GENERATION-SIZE with GENERATION one of v2, v3, "
     "v4, v5p, v5litepod, v6e, v5e, e.g. v5litepod-16, v5p-64, v6e-256, v4-32"),
    (["run", *COMMON, "--", "python", "train.py"],
     "error: command 'python': launchers run lmjax-train or lmjax-sweep; start the command "
     "after -- with one of them"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    out = launch(*args)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [message]
    assert out.stdout == ""
