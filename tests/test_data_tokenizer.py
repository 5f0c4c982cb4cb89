"""Tokenizers are lossless and agree with SentencePiece's own encoder."""
import os

import numpy as np
import pytest
import sentencepiece as spm

import lmjax
from lmjax.data.sentencepiece import (SentencePieceTokenizer, explain_trainer_error,
                                      train_sentencepiece)
from lmjax.data.tokenizer import ByteTokenizer, CharTokenizer
from lmjax.data.tokenizers import load_tokenizer
from lmjax.errors import UsageError

SHAKESPEARE = os.path.join(os.path.dirname(lmjax.__file__), "data", "tinyshakespeare.txt")
NON_ASCII = ("Grüße aus Köln — “quoted” naïve café\n日本語のテキスト、中文。\n"
             "emoji 🎉🚀 and combining e\u0301\n\ttabs\t and  runs   of spaces  \n"
             "\r\nwindows line\r\n\n\n  leading space, trailing space \n12345 67.89\n"
             "Ελληνικά русский עברית العربية\x00nul\n")


@pytest.fixture(scope="module")
def shakespeare():
    with open(SHAKESPEARE, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def sp(shakespeare):
    return train_sentencepiece(shakespeare.split("\n"), vocab_size=600, seed=0,
                               input_sentence_size=20000)


def test_sentencepiece_round_trips_the_shipped_corpus(sp, shakespeare):
    ids = sp.encode(shakespeare)
    assert sp.decode(ids) == shakespeare
    assert len(ids) < 0.6 * len(shakespeare)  # merges learned, not bytes


def test_sentencepiece_round_trips_non_ascii(sp):
    # None of these characters (beyond ASCII) occur in the training text: byte fallback.
    assert sp.decode(sp.encode(NON_ASCII)) == NON_ASCII
    for piece in NON_ASCII.split("\n"):
        assert sp.decode(sp.encode(piece)) == piece


def test_line_by_line_encoding_equals_sentencepiece_on_the_whole_text(sp, shakespeare):
    text = shakespeare[:200_000] + NON_ASCII
    reference = spm.SentencePieceProcessor(model_proto=sp.model_proto).encode(text)
    assert sp.encode(text) == reference
    np.testing.assert_array_equal(sp.encode_array(text, dtype=np.uint16), reference)


def test_sentencepiece_settings_are_lossless_and_fixed(sp):
    assert (sp.unk_id, sp.bos_id, sp.eos_id, sp.pad_id) == (0, 1, 2, -1)
    assert sp.encode("12") == sp.encode("1") + sp.encode("2")  # digits split
    assert sp.decode(sp.encode(" x")) == " x"  # no dummy prefix eaten on decode


def test_training_is_deterministic(shakespeare, sp):
    again = train_sentencepiece(shakespeare.split("\n"), vocab_size=600, seed=0,
                                input_sentence_size=20000)
    assert again.fingerprint() == sp.fingerprint()


def test_save_and_load(sp, tmp_path):
    sp.save(str(tmp_path))
    loaded = load_tokenizer(str(tmp_path))
    assert isinstance(loaded, SentencePieceTokenizer)
    assert loaded.fingerprint() == sp.fingerprint()
    assert loaded.encode(NON_ASCII) == sp.encode(NON_ASCII)


@pytest.mark.parametrize("make", [lambda text: CharTokenizer.train(text), lambda _: ByteTokenizer()])
def test_char_and_bytes_round_trip_and_arrays(make, shakespeare, tmp_path):
    text = shakespeare[:50_000] + NON_ASCII
    tok = make(text)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    np.testing.assert_array_equal(tok.encode_array(text), ids)
    tok.save(str(tmp_path))
    assert load_tokenizer(str(tmp_path)).encode(text) == ids


def test_char_encode_array_names_an_unknown_character():
    with pytest.raises(ValueError, match="'z'"):
        CharTokenizer.train("abc").encode_array("abz")


def test_too_large_a_vocab_becomes_a_sentence_that_says_what_to_do():
    with pytest.raises(UsageError, match=r"--vocab_size=5000: this corpus only supports \d+ "
                                         r"pieces; set --vocab_size=\d+ or less"):
        train_sentencepiece(["a small corpus", "of two lines"], vocab_size=5000)
    message = explain_trainer_error("... Vocabulary size is smaller than required_chars. 100 vs "
                                    "318. Increase vocab_size", 100)
    assert "smaller than the 318 pieces" in message
