"""Tokenizers of Hugging Face model directories behind lmjax's Tokenizer interface.

  tokenizer.json   the `tokenizers` library (what transformers' fast tokenizers load)
  tokenizer.model  SentencePiece, encoding the whole text at once as the HF slow tokenizers do

Special ids come from config.json (bos_token_id / eos_token_id, possibly a list of EOS ids),
else from tokenizer_config.json's bos_token / eos_token. `encode` never adds special tokens;
`add_bos` says whether the model expects a BOS id first (lmjax.infer.generate and lmjax.infer.evaluate add it).
"""
import hashlib
import os
import shutil
from typing import Sequence

from lmjax import io
from lmjax.data.tokenizer import Tokenizer
from lmjax.errors import UsageError

HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                      "special_tokens_map.json", "generation_config.json")
LMJAX_TOKENIZER_DIR = "lmjax_tokenizer"


def _read_json(path: str) -> dict:
    return io.read_json(path) if os.path.isfile(path) else {}


def _token_content(value):
    return value.get("content") if isinstance(value, dict) else value


class _HFTokenizerBase(Tokenizer):
    def _init_specials(self, directory: str, hf_cfg: dict, token_to_id):
        self.directory = directory
        tok_cfg = _read_json(os.path.join(directory, "tokenizer_config.json"))

        def special(name):
            value = hf_cfg.get(f"{name}_token_id")
            if value is None:
                content = _token_content(tok_cfg.get(f"{name}_token"))
                value = token_to_id(content) if content else None
            return value

        eos = special("eos")
        self.eos_ids = [int(i) for i in (eos if isinstance(eos, list) else [eos])
                        if i is not None]
        self.eos_id = self.eos_ids[0] if self.eos_ids else -1
        bos = special("bos")
        self.bos_id = int(bos[0] if isinstance(bos, list) else bos) if bos is not None else -1
        pad = special("pad")
        self.pad_id = int(pad) if isinstance(pad, int) else -1
        self._add_bos_setting = tok_cfg.get("add_bos_token")

    def save_hf(self, directory: str) -> None:
        """Copies the HF tokenizer files this tokenizer was read from."""
        for name in HF_TOKENIZER_FILES:
            path = os.path.join(self.directory, name)
            if os.path.isfile(path) and name != "generation_config.json":
                shutil.copy2(path, os.path.join(directory, name))

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.save_hf(directory)


class TokenizersTokenizer(_HFTokenizerBase):
    """tokenizer.json through the `tokenizers` library."""

    kind = "hf_tokenizers"

    def __init__(self, directory: str, hf_cfg: dict | None = None):
        try:
            import tokenizers
        except ImportError:
            raise UsageError(f"{directory}/tokenizer.json needs the `tokenizers` package; "
                             "pip install tokenizers") from None
        path = os.path.join(directory, "tokenizer.json")
        try:
            self.tokenizer = tokenizers.Tokenizer.from_file(path)
        except Exception as e:  # the library raises a bare Exception for malformed files
            raise UsageError(f"{path}: not a Hugging Face tokenizers file ({e})") from None
        self._path = path
        self._init_specials(directory, hf_cfg or {}, self.tokenizer.token_to_id)
        if self._add_bos_setting is not None:
            self.add_bos = bool(self._add_bos_setting) and self.bos_id >= 0
        else:  # the post-processor says whether BOS leads every encoding
            with_special = self.tokenizer.encode("a", add_special_tokens=True).ids
            self.add_bos = self.bos_id >= 0 and bool(with_special) and with_special[0] == self.bos_id

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def fingerprint(self) -> str:
        with open(self._path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]


class SentencePieceModelTokenizer(_HFTokenizerBase):
    """tokenizer.model (LLaMA-style SentencePiece), the whole text encoded at once."""

    kind = "hf_sentencepiece"

    def __init__(self, directory: str, hf_cfg: dict | None = None):
        import sentencepiece as spm
        path = os.path.join(directory, "tokenizer.model")
        with open(path, "rb") as f:
            self.model_proto = f.read()
        try:
            self.processor = spm.SentencePieceProcessor(model_proto=self.model_proto)
        except RuntimeError:
            raise UsageError(f"{path}: not a SentencePiece model file") from None

        def piece_id(piece):
            i = self.processor.piece_to_id(piece)
            return None if i == self.processor.unk_id() and piece != "<unk>" else i

        self._init_specials(directory, hf_cfg or {}, piece_id)
        if self.bos_id < 0:
            self.bos_id = self.processor.bos_id()
        if self.eos_id < 0 and self.processor.eos_id() >= 0:
            self.eos_id = self.processor.eos_id()
            self.eos_ids = [self.eos_id]
        self.add_bos = self.bos_id >= 0 and self._add_bos_setting is not False

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.processor.decode([int(i) for i in ids if 0 <= int(i) < self.vocab_size])

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_proto).hexdigest()[:16]


def load_hf_tokenizer(directory: str, hf_cfg: dict | None = None) -> Tokenizer | None:
    """The tokenizer of an HF model directory (tokenizer.json first), or None when it has none.

    A directory written by lmjax's HF export of a model with a char/bytes tokenizer keeps that
    tokenizer in lmjax_tokenizer/.
    """
    hf_cfg = hf_cfg or {}
    if os.path.isfile(os.path.join(directory, "tokenizer.json")):
        payload = _read_json(os.path.join(directory, "tokenizer.json"))
        if "kind" not in payload:  # lmjax's own tokenizer.json carries a "kind"
            return TokenizersTokenizer(directory, hf_cfg)
    if os.path.isfile(os.path.join(directory, "tokenizer.model")):
        return SentencePieceModelTokenizer(directory, hf_cfg)
    own = os.path.join(directory, LMJAX_TOKENIZER_DIR)
    if os.path.isdir(own):
        from lmjax.data.tokenizers import load_tokenizer
        return load_tokenizer(own)
    return None
