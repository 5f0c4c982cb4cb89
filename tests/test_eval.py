"""lmjax-eval against transformers' own loss, against the train loop's eval, and on bad input."""
import json
import math

import numpy as np
import pytest

from lmjax.infer import evaluate
from tests.helpers import EXPERIMENT, SHAKESPEARE

TEXT = open(SHAKESPEARE, encoding="utf-8").read()


def run_eval(capsys, *args):
    """lmjax-eval in-process: (exit code, stdout lines, stderr)."""
    try:
        evaluate.main(["--no_progress", *args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out.strip().splitlines(), out.err.strip()


def test_windows_score_every_target_once():
    for n, seq_len, stride in ((100, 16, 16), (100, 16, 5), (17, 16, 8), (2, 16, 4), (50, 7, 1)):
        scored = []
        for start, first, end in evaluate.windows(n, seq_len, stride):
            assert end - start <= seq_len
            scored += range(start + 1 + first, end + 1)
        assert scored == list(range(1, n))


def test_loss_equals_transformers_on_the_same_windows(tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="needs torch (pip install -e .[test])")
    pytest.importorskip("transformers", reason="needs transformers")
    from tests.test_hf import build_hf_model
    from tests.test_hf_tokenizer import write_bpe_tokenizer
    tok = write_bpe_tokenizer(tmp_path / "hf", vocab_size=320)
    ref = build_hf_model(tmp_path / "hf", "gpt2", True, vocab_size=320)
    text = TEXT[:1500]
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    seq_len, stride = 48, 20
    code, lines, err = run_eval(capsys, f"--model=hf:{tmp_path / 'hf'}",
                                f"--text={tmp_path / 'a.txt'}", f"--seq_len={seq_len}",
                                f"--stride={stride}", "--batch_size=3")
    assert code == 0, err
    result = json.loads(lines[-1])

    # transformers' documented sliding-window recipe: labels -100 on already-scored tokens.
    ids = torch.tensor([tok.encode(text).ids])
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, ids.shape[1], stride):
        end = min(begin + seq_len + 1, ids.shape[1])
        window = ids[:, begin:end]
        labels = window.clone()
        labels[:, :prev_end - begin + 1] = -100  # targets up to prev_end were scored before
        with torch.no_grad():
            out = ref(window, labels=labels)
        n = int((labels[:, 1:] != -100).sum())
        nll, count, prev_end = nll + float(out.loss) * n, count + n, end - 1
        if end == ids.shape[1]:
            break
    assert result["tokens"] == count == ids.shape[1] - 1
    assert abs(result["loss"] - nll / count) < 1e-4
    first_token_bytes = len(tok.decode(ids[0, :1].tolist()).encode())
    assert result["bytes"] == len(text.encode()) - first_token_bytes
    nats = result["loss"] * result["tokens"]
    assert math.isclose(result["bits_per_byte"], nats / math.log(2) / result["bytes"],
                        rel_tol=1e-9)
    assert math.isclose(result["perplexity"], math.exp(result["loss"]), rel_tol=1e-9)


@pytest.mark.slow
def test_trained_run_matches_its_logged_eval_loss(tmp_path):
    """Train the default experiment (shrunk), then score its held-out batches from the restored
    checkpoint with lmjax-eval's scorer: the same windows the train loop evaluated, so the loss
    must equal the last eval_loss in metrics.jsonl (both sum nats over the same targets)."""
    from lmjax.config import apply_overrides, load_config
    from lmjax.data import make_data
    from lmjax.hf import load_model
    from lmjax.train.loop import train
    cfg = load_config(EXPERIMENT)
    apply_overrides(cfg, {"model.num_layers": 1, "model.d_model": 32, "model.num_heads": 2,
                          "model.d_ff": 64, "model.max_seq_len": 32, "train.seq_len": 32,
                          "train.batch_size": 8, "train.steps": 6, "train.eval_every": 6,
                          "train.eval_steps": 3, "train.checkpoint_every": 6,
                          "train.log_every": 3, "train.sample_tokens": 0,
                          "train.progress": False, "metrics.tensorboard": False})
    workdir = str(tmp_path / "run")
    train(cfg, workdir)
    with open(f"{workdir}/metrics.jsonl") as f:
        logged = [json.loads(line)["eval_loss"] for line in f if "eval_loss" in line]
    loaded = load_model(workdir)
    scorer = evaluate.Scorer(loaded.cfg, loaded.model, loaded.params)
    total = count = 0.0
    for batch in make_data(cfg, workdir).eval_batches():
        weights = batch.get("weights", np.ones(batch["targets"].shape, np.float32))
        s, c = scorer({"inputs": batch["inputs"], "targets": batch["targets"],
                       "weights": np.asarray(weights, np.float32)})
        total, count = total + s, count + c
    assert count == 3 * 8 * 32
    assert abs(total / count - logged[-1]) < 1e-5


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "nomodel").mkdir()
    cases = [([f"--model=hf:{tmp_path / 'nomodel'}", f"--text={tmp_path / 'a.txt'}"],
              "no config.json"),
             ([f"--model=hf:{tmp_path / 'nomodel'}", f"--text={tmp_path / 'empty.txt'}"],
              "the file is empty"),
             ([f"--model={tmp_path / 'missing'}", f"--text={tmp_path / 'a.txt'}"],
              "no such directory")]
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    cases.append(([f"--model=hf:{tmp_path / 'bert'}", f"--text={tmp_path / 'a.txt'}"],
                  "model_type='bert' is not supported"))
    for args, message in cases:
        code, lines, err = run_eval(capsys, *args)
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err
        assert err.startswith("error: ")
