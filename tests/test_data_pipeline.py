"""The grain pipeline: determinism, per-process slices, exact resume, packing labels."""
import json
import os

import numpy as np
import pytest

import lmjax
from lmjax.config import base_config
from lmjax.data import make_data, pipeline, store
from lmjax.errors import UsageError

SHAKESPEARE = os.path.join(os.path.dirname(lmjax.__file__), "data", "tinyshakespeare.txt")


def write_split(directory, doc_lengths, shard_tokens=1 << 20):
    """A split whose token at stream position i is i itself (uint32), with these documents."""
    writer = store.SplitWriter(str(directory), "train", np.dtype(np.uint32), shard_tokens)
    position = 0
    for length in doc_lengths:
        writer.write(np.arange(position, position + length))
        writer.end_document()
        position += length
    meta = writer.finish()
    return store.TokenSplit(str(directory), "train", meta, np.dtype(np.uint32))


def epoch_starts(windows, global_batch, seed, process_index, process_count, steps):
    ds = pipeline.train_dataset(windows, global_batch, seed, process_index, process_count)
    return np.concatenate([ds[step]["inputs"][:, 0] for step in range(steps)])


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_processes_read_disjoint_slices_that_cover_each_epoch(tmp_path, process_count):
    split = write_split(tmp_path, [1000, 3000, 2001])
    windows = pipeline.PackedWindows(split, seq_len=16)
    assert len(windows) == (6001 - 17) // 16 + 1 == 375
    global_batch, epochs = 8, 2  # 375 windows: epochs end inside a batch
    steps = len(windows) * epochs // global_batch
    per_process = [epoch_starts(windows, global_batch, 3, p, process_count, steps)
                   for p in range(process_count)]
    everything = np.concatenate(per_process)
    assert len(everything) == steps * global_batch
    # Global position g = s*B + p*b + j: put the rows back in that order.
    b = global_batch // process_count
    ordered = np.stack([x.reshape(steps, b) for x in per_process], axis=1).reshape(-1)
    for epoch in range(epochs):
        part = ordered[epoch * len(windows):(epoch + 1) * len(windows)]
        if len(part) == len(windows):
            assert sorted(part.tolist()) == list(range(0, 375 * 16, 16))
    first = ordered[:len(windows)]
    second = ordered[len(windows):2 * len(windows) - 7]
    assert not np.array_equal(first[:len(second)], second)  # reshuffled each epoch
    # The same global batches for any process count.
    np.testing.assert_array_equal(ordered, epoch_starts(windows, global_batch, 3, 0, 1, steps))


def test_seed_determines_the_order(tmp_path):
    windows = pipeline.PackedWindows(write_split(tmp_path, [5000]), seq_len=32)
    a = epoch_starts(windows, 4, 0, 0, 1, 10)
    assert np.array_equal(a, epoch_starts(windows, 4, 0, 0, 1, 10))
    assert not np.array_equal(a, epoch_starts(windows, 4, 1, 0, 1, 10))
    assert not np.array_equal(a, np.sort(a))


def test_windows_and_packing_labels_match_a_direct_computation(tmp_path):
    lengths = [5, 40, 3, 3, 70, 9]
    split = write_split(tmp_path, lengths, shard_tokens=17)  # windows cross shard boundaries
    ends = np.cumsum(lengths)
    windows = pipeline.PackedWindows(split, seq_len=12, stride=5)
    batch = windows.read_batch(np.arange(len(windows)))
    for row, start in enumerate(range(0, len(windows) * 5, 5)):
        np.testing.assert_array_equal(batch["inputs"][row], np.arange(start, start + 12))
        np.testing.assert_array_equal(batch["targets"][row], np.arange(start + 1, start + 13))
        docs = [int(np.searchsorted(ends, i, side="right")) for i in range(start, start + 12)]
        expected_segments, expected_positions = [], []
        for i, doc in zip(range(start, start + 12), docs):
            doc_start = max(ends[doc - 1] if doc else 0, start)
            expected_segments.append(doc - docs[0] + 1)
            expected_positions.append(i - doc_start)
        assert batch["segment_ids"][row].tolist() == expected_segments
        assert batch["positions"][row].tolist() == expected_positions


def config(path, **train):
    cfg = base_config()
    cfg.data.path = path
    cfg.data.tokenizer = "char"
    cfg.model.vocab_size = 65
    cfg.train.batch_size, cfg.train.seq_len, cfg.train.eval_steps = 8, 32, 3
    cfg.train.update(train)
    return cfg


def batches(iterator, count):
    return [next(iterator) for _ in range(count)]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_make_data_resumes_exactly_from_saved_state(tmp_path):
    cfg = config(SHAKESPEARE)
    workdir = str(tmp_path / "run")
    unbroken = batches(make_data(cfg, workdir).train, 12)
    first = make_data(cfg, workdir).train
    batches(first, 5)
    state = json.loads(json.dumps(first.get_state()))  # as orbax stores it
    resumed = make_data(cfg, workdir).train
    resumed.set_state(state)
    assert_same(batches(resumed, 7), unbroken[5:])
    # Two processes resuming from the same state get the two halves of each global batch.
    halves = []
    for p in range(2):
        it = make_data(cfg, workdir, process_index=p, process_count=2).train
        it.set_state(state)
        halves.append(batches(it, 7))
    for step in range(7):
        joined = np.concatenate([halves[0][step]["inputs"], halves[1][step]["inputs"]])
        np.testing.assert_array_equal(joined, unbroken[5 + step]["inputs"])


def test_batches_are_int32_shifted_windows_and_eval_is_fixed(tmp_path):
    cfg = config(SHAKESPEARE)
    data = make_data(cfg, str(tmp_path / "run"), process_index=1, process_count=2)
    batch = next(data.train)
    assert set(batch) == {"inputs", "targets", "segment_ids", "positions"}
    for value in batch.values():
        assert value.shape == (4, 32) and value.dtype == np.int32
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    text = open(SHAKESPEARE, encoding="utf-8").read()
    assert data.tokenizer.decode(batch["inputs"][0]) in text
    first, again = list(data.eval_batches()), list(data.eval_batches())
    assert len(first) == 3
    assert_same(first, again)
    # The held-out windows come from the last 10% of the text, spread across it.
    valid = text[text.index("\n", int(len(text) * 0.9)) + 1:]
    for row in first[0]["inputs"]:
        assert data.tokenizer.decode(row) in valid


def test_state_from_another_setting_is_refused(tmp_path):
    cfg = config(SHAKESPEARE)
    workdir = str(tmp_path / "run")
    state = make_data(cfg, workdir).train.get_state()
    other = make_data(config(SHAKESPEARE, seq_len=16), workdir).train
    with pytest.raises(UsageError, match="saved with seq_len=32, but this run has seq_len=16"):
        other.set_state(state)


def test_model_vocab_smaller_than_tokenizer_is_refused(tmp_path):
    cfg = config(SHAKESPEARE)
    cfg.model.vocab_size = 64
    with pytest.raises(UsageError, match=r"model.vocab_size=64: smaller than the tokenizer's "
                                         r"65 ids .*set --config.model.vocab_size=65"):
        make_data(cfg, str(tmp_path / "run"))


def test_first_use_errors_name_config_fields(tmp_path):
    cfg = config(SHAKESPEARE)
    workdir = str(tmp_path / "run")
    make_data(cfg, workdir)
    cfg.data.tokenizer = "bytes"
    with pytest.raises(UsageError, match=r"run/data: already holds data prepared differently "
                                         r"\(tokenizer: 'char' -> 'bytes'\); delete .* or use a "
                                         r"new --workdir"):
        make_data(cfg, workdir)
    cfg.data.tokenizer, cfg.data.vocab_size = "sentencepiece", 0
    with pytest.raises(UsageError, match=r"^data.vocab_size: required with "
                                         r"data.tokenizer=sentencepiece \(e.g. 8000\)$"):
        make_data(cfg, str(tmp_path / "other"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("ok line\ncaf\xe9\n".encode("latin-1"))
    cfg = config(str(latin1))
    with pytest.raises(UsageError, match=r"latin1.txt: byte 0xe9 at offset 11 is not UTF-8; .* "
                                         r"set data.invalid_utf8=replace$") as err:
        make_data(cfg, str(tmp_path / "latin"))
    assert "--" not in str(err.value)
    cfg.data.valid_fraction = 0.5
    (tmp_path / "one.txt").write_text("x")
    cfg.data.path = str(tmp_path / "one.txt")
    with pytest.raises(UsageError, match=r"^data.valid_fraction=0.5: the input is too small"):
        make_data(cfg, str(tmp_path / "one"))


def test_a_prepared_directory_is_used_as_is(tmp_path):
    from lmjax.data.prepare import prepare
    prepared = str(tmp_path / "prepared")
    prepare(SHAKESPEARE, prepared, tokenizer="bytes", progress=False)
    cfg = config(prepared)
    cfg.model.vocab_size = 257
    data = make_data(cfg, str(tmp_path / "run"))
    assert data.tokenizer.kind == "bytes"
    assert not os.path.exists(tmp_path / "run" / "data")
    assert next(data.train)["inputs"].max() < 257
