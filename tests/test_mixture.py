"""data.mixture: proportions per global batch, determinism from (seed, step), exact resume by
seeking every source, per-source eval, and one-line errors for bad mixtures."""
import json

import numpy as np
import pytest

from tests import helpers
from lmjax import validation
from lmjax.data import make_data
from lmjax.data.prepare import prepare
from lmjax.errors import ConfigError


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two byte-level sources (one tokenizer): Tiny Shakespeare's first 100k characters and the
    next 100k with their case swapped (so a window tells which source it came from), and one
    char-level source, whose tokenizer differs."""
    root = tmp_path_factory.mktemp("mixture")
    with open(helpers.SHAKESPEARE) as f:
        text = f.read()[:200_000]
    out = {}
    for name, part, tok in (("first", text[:100_000], "bytes"), ("second", text[100_000:].swapcase(), "bytes"),
                            ("chars", text[:50_000], "char")):
        raw = root / f"{name}.txt"
        raw.write_text(part)
        out[name] = str(root / name)
        prepare([str(raw)], out[name], tokenizer=tok, valid_fraction=0.1, progress=False,
                log=lambda *_: None)
    return out


def mixture_config(sources, weights=(0.7, 0.3), **extra):
    return helpers.tiny_config({
        "data.path": "", "model.vocab_size": 260, "train.batch_size": 16, "train.eval_steps": 1,
        "data.mixture": ((sources["first"], weights[0]), (sources["second"], weights[1])),
        "data.prefetch": 0, **extra})


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_proportions_are_exact_in_expectation_and_a_function_of_seed_and_step(sources):
    cfg = mixture_config(sources)
    train = make_data(cfg, "unused").train
    counts = np.array([train.counts(s) for s in range(4000)])
    assert (counts.sum(1) == 16).all()
    np.testing.assert_allclose(counts.mean(0) / 16, [0.7, 0.3], atol=0.01)
    again = make_data(cfg, "unused").train
    np.testing.assert_array_equal([again.counts(s) for s in range(50)], counts[:50])
    other_seed = make_data(mixture_config(sources, seed=1), "unused").train
    assert any((other_seed.counts(s) != counts[s]).any() for s in range(50))


def test_rows_come_from_their_sources(sources):
    cfg = mixture_config(sources)
    train = make_data(cfg, "unused").train
    with open(helpers.SHAKESPEARE, "rb") as f:
        first = f.read()[:100_000]
    for step in range(3):
        n_first = train.counts(step)[0]
        batch = next(train)
        for row, tokens in enumerate(batch["inputs"]):
            text = bytes(int(t) for t in tokens if t < 256)
            assert (text in first) == (row < n_first), (step, row)


def test_resume_seeks_every_source_and_hosts_split_the_global_batch(sources):
    cfg = mixture_config(sources)
    straight = take(make_data(cfg, "unused").train, 8)
    first = make_data(cfg, "unused").train
    take(first, 5)
    state = json.loads(json.dumps(first.get_state()))  # as a checkpoint stores it
    resumed = make_data(cfg, "unused").train
    resumed.set_state(state)
    for a, b in zip(take(resumed, 3), straight[5:]):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    hosts = [take(make_data(cfg, "unused", p, 2).train, 4) for p in (0, 1)]
    for step in range(4):
        for key in straight[step]:
            np.testing.assert_array_equal(
                np.concatenate([hosts[0][step][key], hosts[1][step][key]]), straight[step][key])


def test_eval_reports_each_source(sources):
    data = make_data(mixture_config(sources), "unused")
    assert sorted(data.eval_sources) == ["first", "second"]
    per_source = {name: list(batches()) for name, batches in data.eval_sources.items()}
    everything = list(data.eval_batches())
    assert len(everything) == 2 and all(len(b) == 1 for b in per_source.values())


@pytest.mark.parametrize("bad,message", [
    (lambda s: ((s["first"], 0.7), (s["second"], 0.0)), "weight 0.0"),
    (lambda s: ((s["first"], 0.7), (s["first"] + "_missing", 0.3)), "not a directory written"),
    (lambda s: ((s["first"], 0.7), (s["chars"], 0.3)), "different tokenizers"),
])
def test_bad_mixtures_are_one_line_config_errors(sources, bad, message):
    cfg = mixture_config(sources)
    cfg.data.mixture = bad(sources)
    with pytest.raises(ConfigError, match=message) as error:
        validation.validate(cfg, num_devices=1)
    assert "data.mixture" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_two_source_mixture_trains_and_logs_each_source(sources, tmp_path):
    from lmjax.train.loop import train
    cfg = mixture_config(sources, **{"train.steps": 4, "train.eval_every": 4,
                                     "train.checkpoint_every": 4, "train.sample_tokens": 0,
                                     "train.progress": False, "metrics.tensorboard": False})
    summary = train(cfg, str(tmp_path / "run"))
    assert np.isfinite(summary["eval_loss"])
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    evals = [r for r in records if "eval_loss/first" in r]
    assert evals and "eval_loss/second" in evals[-1] and "eval_loss" in evals[-1]
