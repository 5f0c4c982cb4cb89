"""SentencePiece behind the Tokenizer interface, and training it with settings fit for LMs.

The trained model is lossless: no normalisation, whitespace kept as is (no dummy prefix, no
collapsing of runs), unknown characters fall back to their UTF-8 bytes, so
decode(encode(text)) == text for any text. Newlines never occur inside a training sentence, so
no piece spans one: encoding line by line (each line with its "\n") gives exactly the ids of
encoding the whole text at once, and is several times faster on long documents.
"""
import hashlib
import json
import io
import itertools
import os
import re
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from lmjax.data.tokenizer import TOKENIZER_FILE, Tokenizer, write_tokenizer_json
from lmjax.errors import UsageError

MODEL_FILE = "tokenizer.model"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, model_path: str | None = None, model_proto: bytes | None = None):
        if model_proto is None:
            with open(model_path, "rb") as f:
                model_proto = f.read()
        self.model_proto = model_proto
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self.bos_id = self.processor.bos_id()
        self.eos_id = self.processor.eos_id()
        self.pad_id = self.processor.pad_id()
        self.unk_id = self.processor.unk_id()

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str, dtype=np.int32) -> np.ndarray:
        lines = text.split("\n")
        # Each line keeps its newline; the last one has none (and is dropped when empty).
        pieces = [line + "\n" for line in lines[:-1]]
        if lines[-1]:
            pieces.append(lines[-1])
        ids = self.processor.encode(pieces)
        return np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype)

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids if 0 <= int(i) < self.vocab_size]
        return self.processor.decode(ids)

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, MODEL_FILE + ".partial")
        with open(tmp, "wb") as f:
            f.write(self.model_proto)
        os.replace(tmp, os.path.join(directory, MODEL_FILE))
        write_tokenizer_json(directory, {"kind": "sentencepiece", "model": MODEL_FILE})

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_proto).hexdigest()[:16]


def lm_trainer_settings(vocab_size: int, model_type: str, threads: int,
                        input_sentence_size: int) -> dict:
    """LLaMA-style settings: lossless, byte fallback, digits split, ids unk=0 bos=1 eos=2."""
    return dict(
        vocab_size=vocab_size, model_type=model_type,
        byte_fallback=True, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=False, allow_whitespace_only_pieces=True,
        character_coverage=0.9995,
        unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=-1,
        # Reservoir-samples this many lines, so a corpus larger than memory still trains.
        input_sentence_size=input_sentence_size, shuffle_input_sentence=True,
        num_threads=max(1, threads), minloglevel=2,
    )


def train_sentencepiece(lines: Iterable[str], vocab_size: int, model_type: str = "bpe",
                        seed: int = 0, threads: int = 1,
                        input_sentence_size: int = 10_000_000,
                        vocab_size_name: str = "--vocab_size") -> SentencePieceTokenizer:
    """Trains on `lines` (strings without newlines); SentencePiece errors become UsageErrors
    naming the vocabulary size as `vocab_size_name`."""
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model,
            **lm_trainer_settings(vocab_size, model_type, threads, input_sentence_size))
    except RuntimeError as e:
        raise UsageError(explain_trainer_error(str(e), vocab_size, vocab_size_name)) from None
    return SentencePieceTokenizer(model_proto=model.getvalue())


def explain_trainer_error(message: str, vocab_size: int, name: str = "--vocab_size") -> str:
    too_high = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", message)
    if too_high:
        return (f"{name}={vocab_size}: this corpus only supports {too_high.group(2)} "
                f"pieces; set {name}={too_high.group(2)} or less, or add more text")
    too_small = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)",
                          message)
    if too_small:
        return (f"{name}={vocab_size}: smaller than the {too_small.group(2)} pieces this "
                f"corpus needs (bytes, special ids and its characters); set a larger {name}")
    detail = message.split("] ")[-1].strip().replace("\n", " ")
    return f"{name}={vocab_size}: SentencePiece could not train: {detail}"


def load_model_file(path: str) -> SentencePieceTokenizer:
    """Loads an existing .model file (or a directory holding a tokenizer) for reuse."""
    if os.path.isdir(path):
        saved = os.path.join(path, TOKENIZER_FILE)
        if not os.path.isfile(saved):
            raise UsageError(f"--tokenizer_model={path}: the directory holds no "
                             f"{TOKENIZER_FILE}; pass a SentencePiece .model file")
        try:
            with open(saved) as f:
                payload = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"--tokenizer_model={path}: {saved} is not readable JSON ({e}); "
                             "pass a SentencePiece .model file") from None
        if payload.get("kind") != "sentencepiece":
            raise UsageError(f"--tokenizer_model={path}: holds a {payload.get('kind')} "
                             "tokenizer, not SentencePiece")
        return SentencePieceTokenizer(os.path.join(path, payload["model"]))
    if not os.path.isfile(path):
        raise UsageError(f"--tokenizer_model={path}: no such file; pass a SentencePiece .model "
                         "file or a directory written by lmjax-prepare")
    try:
        return SentencePieceTokenizer(path)
    except (RuntimeError, OSError):
        raise UsageError(f"--tokenizer_model={path}: not a SentencePiece model file") from None

