"""lmjax-prepare: token shards equal the tokenizer's own output; bad input fails cleanly."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import lmjax
from lmjax.data import store
from lmjax.data.prepare import main, prepare
from lmjax.data.sentencepiece import train_sentencepiece
from lmjax.errors import UsageError

SHAKESPEARE = os.path.join(os.path.dirname(lmjax.__file__), "data", "tinyshakespeare.txt")
DOCS = ["Première ligne — «citation»\nsecond line 42\n", "日本語\n\n  spaces  kept \n",
        "no trailing newline 🎉"]


def read_split(directory, split):
    prepared = store.open_prepared(directory, verify_hashes=True)
    tokens = prepared.split(split)
    return tokens.read(0, len(tokens)), tokens.doc_ends, prepared


@pytest.fixture(scope="module")
def shakespeare():
    with open(SHAKESPEARE, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory, shakespeare):
    directory = tmp_path_factory.mktemp("sp")
    tok = train_sentencepiece(shakespeare.split("\n"), vocab_size=500, input_sentence_size=20000)
    tok.save(str(directory))
    return str(directory / "tokenizer.model"), tok


@pytest.fixture
def docs(tmp_path):
    paths = []
    for i, text in enumerate(DOCS):
        path = tmp_path / f"doc{i}.txt"
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths


def test_char_split_matches_a_direct_encoding(tmp_path, shakespeare):
    out = str(tmp_path / "out")
    prepare(SHAKESPEARE, out, tokenizer="char", valid_fraction=0.1, progress=False)
    train, train_docs, prepared = read_split(out, "train")
    valid, _, _ = read_split(out, "valid")
    chars = sorted(set(shakespeare))
    reference = np.array([chars.index(c) for c in shakespeare])
    assert prepared.tokenizer.vocab_size == 65 and train.dtype == np.uint16
    # The split lands on the first line start after 90% of the bytes, as nanoGPT's 90/10.
    cut = shakespeare.index("\n", int(len(shakespeare) * 0.9)) + 1
    np.testing.assert_array_equal(train, reference[:cut])
    np.testing.assert_array_equal(valid, reference[cut:])
    assert list(train_docs) == [cut]  # char vocab has no end-of-document id
    meta = prepared.metadata
    assert meta["splits"]["train"]["tokens"] == cut
    assert meta["sources"][0]["bytes"] == len(shakespeare.encode())


@pytest.mark.parametrize("workers", [1, 2])
def test_sentencepiece_documents_end_with_eos(docs, sp_model, tmp_path, workers):
    model_path, tok = sp_model
    out = str(tmp_path / "out")
    meta = prepare(docs[:2], out, tokenizer_model=model_path, valid_files=docs[2:],
                   workers=workers, progress=False)
    train, doc_ends, prepared = read_split(out, "train")
    expected = tok.encode(DOCS[0]) + [2] + tok.encode(DOCS[1]) + [2]
    assert train.tolist() == expected
    assert doc_ends.tolist() == [len(tok.encode(DOCS[0])) + 1, len(expected)]
    valid, _, _ = read_split(out, "valid")
    assert prepared.tokenizer.decode(valid[:-1]) == DOCS[2]
    assert meta["tokenizer"]["eos_id"] == 2 and meta["splits"]["valid"]["documents"] == 1


def test_workers_and_shards_do_not_change_the_tokens(tmp_path, sp_model, shakespeare):
    model_path, tok = sp_model
    # Four copies of the corpus: enough chunks for two worker processes.
    paths = []
    for i in range(4):
        path = tmp_path / f"part{i}.txt"
        path.write_text(shakespeare[i * 200_000:(i + 1) * 200_000 + 150_000], encoding="utf-8")
        paths.append(str(path))
    one = str(tmp_path / "one")
    many = str(tmp_path / "many")
    prepare(paths, one, tokenizer_model=model_path, workers=1, valid_fraction=0.3,
            progress=False)
    prepare(paths, many, tokenizer_model=model_path, workers=2, valid_fraction=0.3,
            shard_tokens=40_000, progress=False)
    for split in ("train", "valid"):
        a, docs_a, _ = read_split(one, split)
        b, docs_b, prepared = read_split(many, split)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(docs_a, docs_b)
        assert len(prepared.metadata["splits"][split]["shards"]) == -(-len(b) // 40_000)
    whole, _, _ = read_split(one, "train")
    first = (tmp_path / "part0.txt").read_text(encoding="utf-8")
    assert whole[:len(tok.encode(first)) + 1].tolist() == tok.encode(first) + [2]


def test_rerun_is_a_no_op_and_changed_settings_are_refused(tmp_path, capsys):
    out = str(tmp_path / "out")
    prepare(SHAKESPEARE, out, tokenizer="char", progress=False)
    shard = os.path.join(out, "train-00000.bin")
    stamp = os.stat(shard).st_mtime_ns
    assert main([f"--input={SHAKESPEARE}", f"--output={out}", "--tokenizer=char",
                 "--no_progress"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert os.stat(shard).st_mtime_ns == stamp
    assert main([f"--input={SHAKESPEARE}", f"--output={out}", "--tokenizer=bytes"]) == 2
    assert "prepared differently (tokenizer: 'char' -> 'bytes')" in capsys.readouterr().err
    assert main([f"--input={SHAKESPEARE}", f"--output={out}", "--tokenizer=bytes",
                 "--overwrite", "--no_progress"]) == 0
    assert store.open_prepared(out).tokenizer.kind == "bytes"


def _error(argv, capsys):
    assert main(argv + ["--no_progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    out = str(tmp_path / "out")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("ok line\ncaf\xe9\n".encode("latin-1"))
    small = tmp_path / "small.txt"
    small.write_text("just a few words\nin two lines\n")
    cases = [
        ([f"--input={tmp_path}/nothing*.txt"], "nothing*.txt: matches no files"),
        ([f"--input={empty}"], "empty.txt: the file is empty"),
        ([f"--input={latin1}"], "latin1.txt: byte 0xe9 at offset 11 is not UTF-8; convert the "
                                "file (e.g. iconv -f latin1 -t utf-8) or set "
                                "--invalid_utf8=replace"),
        ([f"--input={small}", "--vocab_size=5000"], "--vocab_size=5000: this corpus only"),
        ([f"--input={small}", "--tokenizer=sentencepiece"], "--vocab_size: required"),
        ([f"--input={small}", "--valid_fraction=1.5"], "--valid_fraction=1.5"),
    ]
    for args, expected in cases:
        err = _error(args + [f"--output={out}", "--tokenizer=char"]
                     if "sentencepiece" not in str(args) and "vocab" not in str(args)
                     else args + [f"--output={out}"], capsys)
        assert expected in err, err
        assert not os.path.exists(out), args
    # A directory holding something else is refused and left as it was.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.md").write_text("mine")
    err = _error([f"--input={small}", f"--output={other}", "--tokenizer=char", "--overwrite"],
                 capsys)
    assert "holds files lmjax-prepare did not write (notes.md)" in err
    assert os.listdir(other) == ["notes.md"]


def test_invalid_utf8_replacement_is_counted(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 \xff\xfe ok\nline two\n")
    out = str(tmp_path / "out")
    meta = prepare(str(bad), out, tokenizer="bytes", valid_fraction=0, invalid_utf8="replace",
                   progress=False)
    assert meta["replaced_bytes"] == 3
    train, _, prepared = read_split(out, "train")
    assert prepared.tokenizer.decode(train[:-1]) == "caf\ufffd \ufffd\ufffd ok\nline two\n"


def test_replacement_matches_pythons_replace_handler():
    """decode_counted against Python's own "replace" decoding, counted by a handler here."""
    import codecs
    from lmjax.data.sources import decode_counted
    counted = [0]

    def count(error):
        counted[0] += error.end - error.start
        return "\ufffd", error.end

    codecs.register_error("test_count_replace", count)
    rng = np.random.default_rng(0)
    pieces = [b"ok ", "é".encode(), "日".encode(), "🎉".encode(), b"\xff", b"\xe9", b"\xe6\x97",
              b"\xf0\x9f\x8e", b"\x80", b"\n"]
    for _ in range(300):
        data = b"".join(pieces[i] for i in rng.integers(0, len(pieces), rng.integers(0, 12)))
        counted[0] = 0
        expected = data.decode("utf-8", errors="test_count_replace")
        assert decode_counted(data, "x.txt", 0, "replace") == (expected, counted[0]), data
    with pytest.raises(UsageError, match=r"x.txt: byte 0xff at offset 7 is not UTF-8.*set "
                                         r"data.invalid_utf8=replace"):
        decode_counted(b"ok \xff", "x.txt", 4, "error", {"invalid_utf8": "data.invalid_utf8"})


def test_metadata_that_does_not_match_its_shards_is_refused(tmp_path):
    out = str(tmp_path / "out")
    prepare(SHAKESPEARE, out, tokenizer="char", progress=False)
    shard = os.path.join(out, "valid-00000.bin")
    with open(shard, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(UsageError, match="valid-00000.bin: has 1000 bytes but metadata.json "
                                         "says 111538 uint16 tokens"):
        store.open_prepared(out)
    prepare(SHAKESPEARE, out, tokenizer="char", progress=False, overwrite=True)
    meta_path = os.path.join(out, "metadata.json")
    meta = json.load(open(meta_path))
    meta["splits"]["train"]["documents"] = 5
    json.dump(meta, open(meta_path, "w"))
    with pytest.raises(UsageError, match="train-docs.npy: the document index does not match"):
        store.open_prepared(out)
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump({"kind": "bytes"}, f)
    with pytest.raises(UsageError, match="the tokenizer differs"):
        store.open_prepared(out)


def test_killed_prepare_leaves_nothing_that_loads(tmp_path, sp_model, shakespeare):
    model_path, _ = sp_model
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"book{i}.txt").write_text(shakespeare, encoding="utf-8")
    out = str(tmp_path / "out")
    args = [sys.executable, "-m", "lmjax.data.prepare", f"--input={corpus}", f"--output={out}",
            f"--tokenizer_model={model_path}", "--workers=1", "--shard_tokens=100000",
            "--no_progress"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        names = os.listdir(out) if os.path.isdir(out) else []
        if any(n.endswith(".bin") for n in names) and any(n.endswith(".partial") for n in names):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    names = os.listdir(out)
    assert "metadata.json" not in names and any(n.endswith(".partial") for n in names), names
    with pytest.raises(UsageError, match="did not finish"):
        store.open_prepared(out)
    # Running again starts over and finishes.
    assert subprocess.run(args, capture_output=True).returncode == 0
    assert not any(n.endswith(".partial") for n in os.listdir(out))
    assert store.open_prepared(out, verify_hashes=True).metadata["splits"]["train"]["documents"] \
        == 6


def test_token_dtype():
    assert store.token_dtype(65536) == np.uint16
    assert store.token_dtype(65537) == np.uint32
