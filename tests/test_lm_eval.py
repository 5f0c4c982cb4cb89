"""The lm-eval backend `lmjax` against lm-eval's own HF backend on the shipped local tasks.

Reference: `hf` at batch size 1 (no padding at all) on the same HF directory. lmjax must give the
same accuracies, per-request loglikelihoods within 1e-4 (plus 1e-6 relative: HF sums float32),
the same is_greedy flags and the same greedy generations, whatever its batch size.
"""
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

pytest.importorskip("lm_eval", reason="lm-eval tests need lm-eval (pip install -e .[test])")
pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="lm-eval's HF backend needs accelerate")

from tests import lm_eval_helpers as h  # noqa: E402
from tests.helpers import REPO, cli_env  # noqa: E402

FAST_TASKS = ("lmjax_cloze", "lmjax_choice", "lmjax_arithmetic")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return h.build_hf_dir(tmp_path_factory.mktemp("llama"), "llama", context=128)


def test_llama_matches_hf_backend_in_padded_batches(llama_dir):
    """lmjax in batches of 3 (rows of mixed lengths padded together) vs unpadded HF rows."""
    ref_results, reference = h.run_tasks(h.hf_lm(llama_dir), FAST_TASKS, limit=4)
    ours_results, ours = h.run_tasks(h.lmjax_lm(llama_dir, batch_size=3), FAST_TASKS, limit=4)
    assert h.accuracies(ours_results) == h.accuracies(ref_results)
    h.assert_same_responses(ours, reference)


def test_truncation_is_counted_in_one_warning(llama_dir, caplog):
    from lm_eval.api.instance import Instance
    lm = h.lmjax_lm(llama_dir, batch_size=4, max_length=32)
    pairs = [("a " * 40, " b"), ("a b", " c"), ("c " * 31, " d" * 2), ("x", " y")]
    expected = sum(len(lm.tok_encode(c + x)) > 33 for c, x in pairs)
    assert expected >= 1
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    with caplog.at_level(logging.WARNING):
        values = lm.loglikelihood(requests, disable_tqdm=True)
    assert len(values) == 4 and all(v[0] < 0 for v in values)
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert warnings == [f"lmjax: {expected} of 4 loglikelihood requests had context + "
                        "continuation longer than max_length + 1 = 33 tokens; their contexts "
                        "were truncated from the left"]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    from lmjax.errors import UsageError
    from lmjax.eval_tasks import jsonl
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": "fine too"}\n{"text": oops}\n')
    with pytest.raises(UsageError, match=rf"^{path}:4: not valid JSON"):
        jsonl.load({"test": str(path)}, required=["text"])
    path.write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    with pytest.raises(UsageError, match=rf"^{path}:2: missing field 'text'"):
        jsonl.load({"test": str(path)}, required=["text"])
    rows = jsonl.load({"test": "data/arithmetic.jsonl"}, required=["question", "answer"])
    assert len(rows["test"]) == 40 and rows["test"][0]["question"].endswith("=")


def test_bad_task_input_is_one_line_before_loading_the_model(tmp_path, capsys):
    from lmjax.infer import evaluate
    bad = tmp_path / "tasks"
    bad.mkdir()
    (bad / "broken.yaml").write_text(
        open(REPO + "/lmjax/eval_tasks/lmjax_cloze.yaml").read()
        .replace("task: lmjax_cloze", "task: broken_cloze")
        .replace("data/cloze_time_machine.jsonl", str(bad / "broken.jsonl")))
    (bad / "broken.jsonl").write_text('{"text": "one two three"}\n{"text": 3\n')
    for argv, message in (
            (["--tasks=lmjax_cloze,no_such_task_xyz"], "error: --tasks: unknown task "
                                                       "'no_such_task_xyz'; lmjax ships"),
            ([f"--include_path={bad}", "--tasks=broken_cloze"],
             f"error: {bad}/broken.jsonl:2: not valid JSON")):
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(["--model=hf:/no/such/model/needed", *argv])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(message), err


# ---- slow: both families in full, a 64-token GPT-2, 8 devices, the command lines ----------------

@pytest.mark.slow
@pytest.mark.parametrize("kind,context", [("gpt2", 256), ("llama", 256), ("gpt2", 64)])
def test_full_parity(tmp_path, kind, context):
    directory = h.build_hf_dir(tmp_path / kind, kind, context=context, seed=1)
    # At 64 tokens some whole choices (continuations) do not fit: HF refuses them, as lmjax does.
    tasks = h.TASKS if context > 64 else ("lmjax_cloze", "lmjax_arithmetic", "lmjax_rolling")
    ref_results, reference = h.run_tasks(h.hf_lm(directory), tasks, limit=20)
    lm = h.lmjax_lm(directory, batch_size=16)
    ours_results, ours = h.run_tasks(lm, tasks, limit=20)
    assert h.accuracies(ours_results) == h.accuracies(ref_results)
    h.assert_same_responses(ours, reference)
    if context == 64:  # the passages do not fit: left truncation decided these numbers
        assert lm.truncated["loglikelihood"] > 10 and lm.truncated["generate_until"] == 0
    # Batch independence: the same values bit for bit at batch size 1 (TokenScorer's one program
    # per length bucket).
    _, ours_1 = h.run_tasks(h.lmjax_lm(directory, batch_size=1), tasks, limit=20)
    assert h.assert_same_responses(ours_1, ours, atol=0, rtol=0) == 0


DUMP = """
import json, sys
from tests import lm_eval_helpers as h
lm = h.lmjax_lm(sys.argv[1], batch_size=16)
assert lm.scorer.mesh.size == len(__import__("jax").devices())
_, responses = h.run_tasks(lm, limit=8)
json.dump([[list(k), v] for k, v in responses.items()], open(sys.argv[2], "w"))
"""


@pytest.mark.slow
def test_eight_devices_match_one(llama_dir, tmp_path):
    _, one = h.run_tasks(h.lmjax_lm(llama_dir, batch_size=16), limit=8)
    result = subprocess.run([sys.executable, "-c", DUMP, llama_dir, str(tmp_path / "8.json")],
                            cwd=REPO, capture_output=True, text=True, timeout=900,
                            env=cli_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"))
    assert result.returncode == 0, result.stderr[-3000:]
    eight = {tuple(k): v for k, v in json.load(open(tmp_path / "8.json"))}
    h.assert_same_responses(eight, one, atol=1e-5, rtol=1e-6)


LM_EVAL_CLI = """
import sys
exec(open(sys.argv.pop(1)).read())  # the .pth line, as site-packages runs it at start-up
from lm_eval.__main__ import cli_evaluate
cli_evaluate()
"""


@pytest.mark.slow
def test_command_lines(llama_dir, tmp_path):
    """`lm_eval --model lmjax` (through the start-up hook) and `lmjax-eval --tasks` agree."""
    from lmjax.lm_eval_plugin import PTH_FILE, PTH_LINE
    (tmp_path / "hook.py").write_text(PTH_LINE)
    lm_eval_bin = shutil.which("lm_eval")
    command = [sys.executable, "-c", LM_EVAL_CLI, str(tmp_path / "hook.py")]
    args = ["run", "--model", "lmjax", "--model_args", f"model=hf:{llama_dir},batch_size=8",
            "--tasks", "lmjax_cloze", "--include_path", f"{REPO}/lmjax/eval_tasks", "--limit", "5",
            "--output_path", str(tmp_path / "out")]
    result = subprocess.run(command + args, cwd=REPO, capture_output=True, text=True,
                            timeout=900, env=cli_env(**h.OFFLINE))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lmjax_cloze" in result.stdout
    files = list((tmp_path / "out").rglob("results_*.json"))
    accuracy = json.loads(files[0].read_text())["results"]["lmjax_cloze"]["acc,none"]
    result = subprocess.run([sys.executable, "-m", "lmjax.infer.evaluate",
                             f"--model=hf:{llama_dir}", "--tasks=lmjax_cloze", "--limit=5",
                             "--batch_size=8"], cwd=REPO, capture_output=True, text=True,
                            timeout=900, env=cli_env())
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads(result.stdout.strip().splitlines()[-1])
    assert final["task/lmjax_cloze/acc"] == accuracy
    installed_hook = os.path.join(sysconfig.get_paths()["purelib"], PTH_FILE)
    if lm_eval_bin and os.path.isfile(installed_hook):  # the real console script, if hooked
        result = subprocess.run([lm_eval_bin] + args, cwd=REPO, capture_output=True, text=True,
                                timeout=900, env=cli_env(**h.OFFLINE))
        assert result.returncode == 0, result.stderr[-3000:]


def test_start_up_hook_registers_lmjax_lazily():
    """What the installed .pth runs: `lmjax` joins lm-eval's registry without importing JAX."""
    from lmjax.lm_eval_plugin import PTH_LINE
    code = PTH_LINE + ("import lm_eval.api.registry as r\n"
                       "assert 'lmjax' in r.model_registry and 'jax' not in sys.modules\n"
                       "print(r.model_registry._objs['lmjax'])\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env=cli_env())
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "lmjax.infer.lm_eval_backend:LmjaxLM"
    from lm_eval.api.registry import get_model
    from lmjax.infer.lm_eval_backend import LmjaxLM
    assert get_model("lmjax") is LmjaxLM
