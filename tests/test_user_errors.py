"""Every command's user errors: one line naming the input and the fix, exit 2, nothing created.

The commands' main() functions run in this process (the contract is what they print to stderr
and the SystemExit they end with; tests/test_validation.py proves the same through real
processes). Each case compares a listing of every file under the test's directories before and
after, so a run rejected after preparing its data must also take WORKDIR/data away again.
"""
import json
import os
import shutil

import pytest

from lmjax.data.prepare import main as prepare_main
from lmjax.infer.evaluate import main as eval_main
from lmjax.main import export_main, sample_main, train_main
from lmjax.study.plot import main as plot_main
from lmjax.study.scaling import main as scaling_main
from tests import helpers

TINY = {**helpers.TINY, "train.steps": 2, "train.sample_tokens": 0, "train.progress": False,
        "train.eval_steps": 0, "metrics.tensorboard": False, "model.vocab_size": 128,
        "metrics.peak_flops_per_device": 1e12, "model.num_layers": 1, "model.scan_layers": False,
        "model.remat_policy": "none"}  # quick to compile: only what the errors need


def train_args(workdir, **overrides):
    values = {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}}
    return [f"--config={helpers.EXPERIMENT}", f"--workdir={workdir}",
            *[f"--config.{k}={v}" for k, v in values.items()]]


def listing(*roots):
    """{path: (size, mtime)} of everything under roots (directories map to None)."""
    found = {}
    for root in roots:
        for directory, _, files in os.walk(root):
            found[directory] = None
            for name in files:
                stat = os.stat(os.path.join(directory, name))
                found[os.path.join(directory, name)] = (stat.st_size, stat.st_mtime_ns)
    return found


def refused(capsys, main, argv, expected, *roots):
    """Runs main(argv): exit 2, one stderr line holding every `expected` part, roots unchanged."""
    before = listing(*roots)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        code = main(argv)
        raise SystemExit(code)  # mains that return their exit code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stop.value.code == 2, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    for part in expected:
        assert part in lines[0], (part, lines[0])
    assert listing(*roots) == before, lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A trained workdir, its lmjax export and its HF export (read-only for the tests)."""
    root = tmp_path_factory.mktemp("made")
    workdir, export, hf = str(root / "run"), str(root / "export"), str(root / "hf")
    with pytest.raises(SystemExit) as done:
        train_main(train_args(workdir))
        raise SystemExit(0)
    assert done.value.code in (0, None)
    for argv in ([f"--workdir={workdir}", f"--output={export}"],
                 [f"--workdir={workdir}", f"--output={hf}", "--format=hf"]):
        with pytest.raises(SystemExit) as done:
            export_main(argv)
            raise SystemExit(0)
        assert done.value.code in (0, None)
    return {"workdir": workdir, "export": export, "hf": hf, "root": str(root)}


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return str(path)


def text_sample(n_chars):
    with open(helpers.SHAKESPEARE, encoding="utf-8") as f:
        return f.read(n_chars)


# (files to write under tmp, overrides, parts of the message); the workdir is tmp/run
TRAIN_CASES = {
    "binary data": ({"bin.txt": bytes(range(256)) * 4}, {"data.path": "bin.txt"},
                    ["bin.txt: byte 0x80 at offset 128 is not UTF-8",
                     "set data.invalid_utf8=replace"]),
    "empty data": ({"empty.txt": ""}, {"data.path": "empty.txt"},
                   ["empty.txt: the file is empty"]),
    "too short for one window": ({"short.txt": "hello\n"}, {"data.path": "short.txt"},
                                 ["data.path=", "short.txt", "fewer than train.seq_len+1=17",
                                  "shorter seq_len"]),
    "vocab smaller than the data's": ({"ok.txt": text_sample(3000)},
                                      {"data.path": "ok.txt", "model.vocab_size": 8},
                                      ["model.vocab_size=8: smaller than the tokenizer's",
                                       "ok.txt", "--config.model.vocab_size="]),
    "no valid split": ({"ok.txt": text_sample(3000)},
                       {"data.path": "ok.txt", "data.valid_fraction": 0.0,
                        "train.eval_steps": 1},
                       ["has no valid split but train.eval_steps=1", "train.eval_steps=0"]),
    "sentencepiece vocab too large": ({"ok.txt": text_sample(3000)},
                                      {"data.path": "ok.txt", "data.tokenizer": "sentencepiece",
                                       "data.vocab_size": 100000, "model.vocab_size": 100000},
                                      ["data.vocab_size=100000: this corpus only supports",
                                       "set data.vocab_size="]),
    "sample prompt the tokenizer cannot encode": (
        {"ok.txt": text_sample(3000)},
        {"data.path": "ok.txt", "train.sample_tokens": 4, "train.sample_prompt": "日本"},
        ["train.sample_prompt='日本': character '日' is not in the character vocabulary"]),
}


@pytest.mark.parametrize("existing", [False, True], ids=["new workdir", "existing workdir"])
def test_training_rejected_after_its_data_is_prepared_leaves_nothing(tmp_path, capsys,
                                                                     existing):
    """Every case but the first two fails only after WORKDIR/data was prepared."""
    workdir = tmp_path / "run"
    if existing:  # a workdir the user made: it stays, with only what it held
        workdir.mkdir()
        (workdir / "notes.txt").write_text("mine")
    for name, (files, overrides, expected) in TRAIN_CASES.items():
        for file, data in files.items():
            write(str(tmp_path / file), data)
        overrides = {k: str(tmp_path / v) if k == "data.path" else v
                     for k, v in overrides.items()}
        refused(capsys, train_main, train_args(workdir, **overrides), expected, str(tmp_path))
        assert os.path.isdir(workdir) == existing, name
        if existing:
            assert os.listdir(workdir) == ["notes.txt"], name


def test_workdir_of_another_model_and_a_config_with_a_syntax_error(made, tmp_path, capsys):
    other = str(tmp_path / "run")
    shutil.copytree(made["workdir"], other)
    refused(capsys, train_main, train_args(other, model__d_model=64),
            ["checkpoint", "does not fit this model", "params/embed/embedding: checkpoint "
             "(128, 32) vs model (128, 64)", "another --workdir"], str(tmp_path))
    broken = write(str(tmp_path / "broken.py"), "def get_config(:\n")
    refused(capsys, train_main, [f"--config={broken}", f"--workdir={tmp_path}/new"],
            ["broken.py line 1: invalid syntax", "fix the experiment file"], str(tmp_path))


def damaged_copy(source, target, relative, content):
    shutil.copytree(source, target)
    write(os.path.join(target, relative), content)
    return target


def test_model_directories_with_broken_files(made, tmp_path, capsys):
    """sample, eval and both export formats name the damaged file instead of a traceback."""
    t = str(tmp_path)
    text = write(f"{t}/text.txt", text_sample(500))
    not_json = "{not json"
    hf_config = json.load(open(os.path.join(made["hf"], "config.json")))
    cases = [
        (damaged_copy(made["workdir"], f"{t}/w1", "config.json", not_json), "config.json",
         "not valid JSON"),
        (damaged_copy(made["workdir"], f"{t}/w2", "config.json", '{"model": {"d_modle": 1}}'),
         "config.json", "not an lmjax run config"),
        (damaged_copy(made["export"], f"{t}/e1", "export.json", not_json), "export.json",
         "not valid JSON"),
        (damaged_copy(made["export"], f"{t}/e2", "export.json", "{}"), "export.json",
         "holds no export step"),
        (damaged_copy(made["export"], f"{t}/e3", "tokenizer/tokenizer.json", not_json),
         "tokenizer.json", "not valid JSON"),
        (damaged_copy(made["export"], f"{t}/e4", "tokenizer/tokenizer.json", '{"kind": "x"}'),
         "tokenizer.json", "unknown tokenizer kind 'x'"),
        ("hf:" + damaged_copy(made["hf"], f"{t}/h1", "config.json", not_json), "config.json",
         "not valid JSON"),
        ("hf:" + damaged_copy(made["hf"], f"{t}/h2", "config.json", "[1, 2]"), "config.json",
         "holds a JSON list"),
        ("hf:" + damaged_copy(made["hf"], f"{t}/h3", "config.json", json.dumps(
            {k: v for k, v in hf_config.items() if k != "n_embd"})), "config.json",
         "has no 'n_embd'"),
        ("hf:" + damaged_copy(made["hf"], f"{t}/h4", "config.json", json.dumps(
            {**hf_config, "n_embd": "wide"})), "config.json", "wrong type"),
        ("hf:" + damaged_copy(made["hf"], f"{t}/h5", "model.safetensors", b"garbage"),
         "model.safetensors", "not a readable safetensors file"),
        ("hf:" + damaged_copy(made["hf"], f"{t}/h6", "tokenizer.json", not_json),
         "tokenizer.json", "not valid JSON"),
    ]
    for model, file, problem in cases:
        parts = [file, problem]
        refused(capsys, sample_main, [f"--model={model}", "--max_new_tokens=1"], parts, t)
        refused(capsys, eval_main, [f"--model={model}", f"--text={text}", "--no_progress"],
                parts, t)
        if not model.startswith("hf:") and "export" not in file and "tokenizer" not in file:
            for fmt in ("lmjax", "hf"):
                refused(capsys, export_main, [f"--workdir={model}", f"--output={t}/out",
                                              f"--format={fmt}"], parts, t)


def test_text_the_tokenizer_cannot_encode(made, tmp_path, capsys):
    japanese = write(str(tmp_path / "jp.txt"), "日本語のテキスト\n")
    roots = (str(tmp_path), made["root"])
    refused(capsys, sample_main, [f"--model={made['workdir']}", "--prompt=日本"],
            ["prompt 0: character '日' is not in the character vocabulary",
             "use only characters"], *roots)
    refused(capsys, eval_main, [f"--model={made['export']}", f"--text={japanese}",
                                "--no_progress"],
            ["--text=", "jp.txt: character '日' is not in the character vocabulary"], *roots)


def test_flags_out_of_range_and_unwritable_outputs(made, tmp_path, capsys):
    t = str(tmp_path)
    text = write(f"{t}/text.txt", text_sample(2000))
    a_file = write(f"{t}/a_file", "x")
    roots = (t, made["root"])
    cases = [
        (prepare_main, [f"--input={text}", f"--output={t}/p", "--tokenizer=char",
                        "--workers=-1"], ["--workers=-1: must be >= 0"]),
        (prepare_main, [f"--input={text}", f"--output={t}/p", "--vocab_size=300",
                        "--input_sentence_size=0"], ["--input_sentence_size=0: must be > 0"]),
        (prepare_main, [f"--input={text}", f"--output={a_file}/p", "--tokenizer=char"],
         ["--output=", "a_file/p: cannot be created", "not a writable directory"]),
        (scaling_main, [f"--workdir={made['root']}", "--huber_delta=0"],
         ["--huber_delta=0.0: must be > 0"]),
        (scaling_main, [f"--workdir={made['root']}", f"--out={t}"],
         [f"--out={t}: is a directory"]),
        (plot_main, [made["workdir"], f"--out={a_file}/loss.png"],
         ["--out=", "cannot be written", "not a writable directory"]),
        (export_main, [f"--workdir={made['export']}", f"--output={t}/out"],
         ["is already an lmjax-export directory", "training workdir"]),
    ]
    for main, argv, expected in cases:
        refused(capsys, main, argv + (["--no_progress"] if main is prepare_main else []),
                expected, *roots)
