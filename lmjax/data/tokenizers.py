"""Tokenizers by kind: `load_tokenizer(dir)` reads the tokenizer.json that `save(dir)` wrote."""
import json
import os

from lmjax.data.sentencepiece import SentencePieceTokenizer
from lmjax.data.tokenizer import TOKENIZER_FILE, ByteTokenizer, CharTokenizer, Tokenizer

# tokenizer.json "kind" -> (directory, payload) -> Tokenizer
TOKENIZER_KINDS = {
    "char": lambda directory, payload: CharTokenizer(payload["chars"]),
    "bytes": lambda directory, payload: ByteTokenizer(),
    "sentencepiece": lambda directory, payload: SentencePieceTokenizer(
        os.path.join(directory, payload["model"])),
}


def load_tokenizer(directory: str) -> Tokenizer:
    """Loads the tokenizer saved in `directory` (tokenizer.json or a SentencePiece model)."""
    path = os.path.join(directory, TOKENIZER_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{directory}: no {TOKENIZER_FILE}; this directory holds no "
                                "lmjax tokenizer")
    with open(path) as f:
        payload = json.load(f)
    kind = payload.get("kind")
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"{path}: unknown tokenizer kind {kind!r}")
    return TOKENIZER_KINDS[kind](directory, payload)
