"""One tokenizer interface over characters, bytes and (in sentencepiece.py) SentencePiece.

Every tokenizer saves itself into a directory (`save(dir)`) and `tokenizers.load_tokenizer(dir)` brings it
back, so a workdir or a prepared dataset carries the exact tokenizer its tokens were made with.
"""
import os
from typing import Sequence

import numpy as np

from lmjax import io
from lmjax.errors import UsageError

TOKENIZER_FILE = "tokenizer.json"


class Tokenizer:
    """encode/decode between text and ids; vocab_size; special ids (-1 when absent)."""

    kind: str = ""
    bos_id: int = -1
    eos_id: int = -1
    pad_id: int = -1

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def encode_array(self, text: str, dtype=np.int32) -> np.ndarray:
        """encode() as a numpy array; subclasses make it fast for long texts."""
        return np.asarray(self.encode(text), dtype=dtype)

    def save(self, directory: str) -> None:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A hash that changes whenever the id<->text mapping changes."""
        raise NotImplementedError


class CharTokenizer(Tokenizer):
    """One id per distinct character of the training text, as nanoGPT's shakespeare_char."""

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        self._index = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._index[ch] for ch in text]
        except KeyError as e:
            raise self._unknown(e.args[0]) from None

    def encode_array(self, text: str, dtype=np.int32) -> np.ndarray:
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.frombuffer("".join(self.chars).encode("utf-32-le"), dtype=np.uint32)
        order = np.argsort(table)
        where = np.searchsorted(table, codepoints, sorter=order).clip(0, len(table) - 1)
        ids = order[where]
        unknown = table[ids] != codepoints
        if unknown.any():
            raise self._unknown(chr(int(codepoints[np.argmax(unknown)])))
        return ids.astype(dtype)

    def _unknown(self, ch: str) -> UsageError:
        return UsageError(f"character {ch!r} is not in the character vocabulary "
                          f"({self.vocab_size} characters); use only characters of the text "
                          "it was prepared from")

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] for i in ids if 0 <= i < len(self.chars))

    def save(self, directory: str) -> None:
        write_tokenizer_json(directory, {"kind": "char", "chars": "".join(self.chars)})

    def fingerprint(self) -> str:
        import hashlib
        return hashlib.sha256("".join(self.chars).encode()).hexdigest()[:16]


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes: ids 0..255, plus an end-of-document id 256."""

    kind = "bytes"
    eos_id = 256

    @property
    def vocab_size(self) -> int:
        return 257

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, text: str, dtype=np.int32) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(dtype)

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def save(self, directory: str) -> None:
        write_tokenizer_json(directory, {"kind": "bytes"})

    def fingerprint(self) -> str:
        return "bytes-utf8-eos256"


def write_tokenizer_json(directory, payload):
    """DIR/tokenizer.json, whole or not at all."""
    os.makedirs(directory, exist_ok=True)
    io.write_json(os.path.join(directory, TOKENIZER_FILE), payload, indent=None)
