"""Tokenizers by kind: `load_tokenizer(dir)` reads the tokenizer.json that `save(dir)` wrote."""
import os

from lmjax import io
from lmjax.data.sentencepiece import SentencePieceTokenizer
from lmjax.data.tokenizer import TOKENIZER_FILE, ByteTokenizer, CharTokenizer, Tokenizer
from lmjax.errors import UsageError

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
        raise UsageError(f"{directory}: no {TOKENIZER_FILE}; this directory holds no lmjax "
                         "tokenizer")
    payload = io.read_json(path)
    kind = payload.get("kind") if isinstance(payload, dict) else None
    if kind not in TOKENIZER_KINDS:
        raise UsageError(f"{path}: unknown tokenizer kind {kind!r}; use one of "
                         f"{', '.join(TOKENIZER_KINDS)}")
    try:
        return TOKENIZER_KINDS[kind](directory, payload)
    except UsageError:
        raise
    except (KeyError, TypeError, ValueError, OSError, RuntimeError) as e:
        # A field missing from tokenizer.json, or a SentencePiece model that does not load.
        raise UsageError(f"{path}: the {kind} tokenizer does not load ({type(e).__name__}: "
                         f"{e}); restore it from the directory it was prepared in") from None
