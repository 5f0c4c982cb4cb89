"""lmjax-export: a checkpoint's parameters, config and tokenizer, loadable like the workdir itself;
bad input is one line, exit code 2, and touches nothing."""
import json
import os
import sys

import jax
import numpy as np
import pytest

import checkpoint_helpers as h


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("trained"))
    h.train(path, train__steps=4, train__checkpoint_every=2)
    assert h.checkpoint_steps(path) == [2, 4]
    return path


def export(workdir, output, *extra):
    return h.run([sys.executable, "-c", "from lmjax.main import export_main; export_main()",
                  f"--workdir={workdir}", f"--output={output}", *extra])


def export_in_process(capsys, workdir, output, *extra):
    from lmjax.main import export_main
    with pytest.raises(SystemExit) as exit_info:
        export_main([f"--workdir={workdir}", f"--output={output}", *extra])
    return exit_info.value.code, capsys.readouterr().err


def test_export_holds_the_checkpoint_parameters(workdir, tmp_path):
    from lmjax.infer.restore import load_run
    output = str(tmp_path / "export")
    result = export(workdir, output, "--step=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(output)) == ["config.json", "export.json", "params", "tokenizer"]
    with open(os.path.join(output, "export.json")) as f:
        info = json.load(f)
    assert info["step"] == 2 and info["num_params"] > 0
    exported, trained = load_run(output), load_run(workdir, step=2)
    assert exported.step == trained.step == 2
    pairs = list(zip(jax.tree.leaves(exported.params), jax.tree.leaves(trained.params)))
    assert len(pairs) == len(jax.tree.leaves(trained.params)) > 0
    for a, b in pairs:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    text = "To be, or not"
    assert exported.tokenizer.decode(exported.tokenizer.encode(text)) == text
    assert exported.tokenizer.encode(text) == trained.tokenizer.encode(text)
    # No optimizer state travels: the export is parameters only.
    assert "opt_state" not in str(os.listdir(os.path.join(output, "params")))


@pytest.mark.parametrize("case", ["missing_step", "output_not_empty", "not_a_workdir"])
def test_bad_export_input_is_one_line_and_touches_nothing(workdir, tmp_path, case, capsys):
    output = tmp_path / "export"
    extra = []
    source = workdir
    if case == "missing_step":
        extra, expected = ["--step=3"], "--step=3: no such checkpoint"
    elif case == "output_not_empty":
        output.mkdir()
        (output / "keep.txt").write_text("mine")
        expected = "already exists and is not an empty directory"
    else:
        source, expected = str(tmp_path), "no config.json"
    before = h.tree_listing(workdir)
    code, stderr = export_in_process(capsys, source, str(output), *extra)
    assert code == 2, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert h.tree_listing(workdir) == before
    if case == "output_not_empty":
        assert os.listdir(output) == ["keep.txt"]
    else:
        assert not output.exists()


def test_export_to_hf_gives_transformers_the_same_logits(workdir, tmp_path):
    torch = pytest.importorskip("torch", reason="torch is in the test extra")
    transformers = pytest.importorskip("transformers", reason="transformers is in the test extra")
    from lmjax.infer.restore import load_run
    output = str(tmp_path / "hf")
    from lmjax.main import export_main
    export_main([f"--workdir={workdir}", f"--output={output}", "--format=hf"])
    run = load_run(workdir)
    ids = np.arange(12, dtype=np.int32).reshape(2, 6) % run.cfg.model.vocab_size
    ours = np.asarray(run.model.apply({"params": run.params}, ids))
    model = transformers.AutoModelForCausalLM.from_pretrained(output, dtype=torch.float32)
    with torch.no_grad():
        theirs = model(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-4)
