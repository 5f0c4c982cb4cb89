"""Token shards on disk: the layout lmjax-prepare writes and the pipeline memory-maps.

A prepared directory holds
  metadata.json             written last: its presence means every file it lists is whole
  tokenizer.json (+ .model) the tokenizer the ids were made with
  {split}-{k:05d}.bin       raw little-endian token ids (uint16 if the vocab fits, else uint32)
  {split}-docs.npy          int64 end offset of every document in the split's token stream
Every file is written under a `.partial` name and renamed once complete, so an interrupted run
leaves only `.partial` files and no metadata.json: nothing that loads as a finished dataset.
"""
import hashlib
import json
import os
import re
from typing import Sequence

import numpy as np

from lmjax.data.tokenizer import Tokenizer
from lmjax.data.tokenizers import load_tokenizer
from lmjax.errors import UsageError

METADATA_FILE = "metadata.json"
FORMAT = "lmjax-tokens-v1"
PARTIAL = ".partial"
SPLITS = ("train", "valid")
# Names lmjax-prepare may write; anything else means the directory belongs to someone else.
_OWN_FILE = re.compile(r"^(metadata\.json|tokenizer\.(json|model)|\.prepare\.lock|"
                       r"(train|valid)-\d{5}\.bin|(train|valid)-docs\.npy)(\.partial|\.tmp)?$")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def foreign_files(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        return []
    return sorted(name for name in os.listdir(directory) if not _OWN_FILE.match(name))


def remove_own_files(directory: str) -> None:
    """Deletes what an earlier (finished or interrupted) prepare left; metadata first."""
    metadata = os.path.join(directory, METADATA_FILE)
    if os.path.exists(metadata):
        os.remove(metadata)
    for name in os.listdir(directory):
        if _OWN_FILE.match(name) and name != ".prepare.lock":
            os.remove(os.path.join(directory, name))


def write_json_atomic(path: str, payload) -> None:
    tmp = path + PARTIAL
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class SplitWriter:
    """Appends token arrays to numbered shards of at most `shard_tokens` tokens each."""

    def __init__(self, directory: str, split: str, dtype: np.dtype, shard_tokens: int):
        self.directory, self.split, self.dtype = directory, split, dtype
        self.shard_tokens = shard_tokens
        self.shards: list[dict] = []
        self.doc_ends: list[int] = []
        self.tokens = 0
        self._file = None

    def _open(self):
        name = f"{self.split}-{len(self.shards):05d}.bin"
        self._file = open(os.path.join(self.directory, name + PARTIAL), "wb")
        self._shard = {"file": name, "tokens": 0}
        self._hash = hashlib.sha256()

    def _close(self):
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self._shard["sha256"] = self._hash.hexdigest()
        path = os.path.join(self.directory, self._shard["file"])
        os.replace(path + PARTIAL, path)
        self.shards.append(self._shard)

    def write(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=self.dtype)
        while len(ids):
            if self._file is None:
                self._open()
            room = self.shard_tokens - self._shard["tokens"]
            part, ids = ids[:room], ids[room:]
            data = part.tobytes()
            self._file.write(data)
            self._hash.update(data)
            self._shard["tokens"] += len(part)
            self.tokens += len(part)
            if self._shard["tokens"] == self.shard_tokens:
                self._close()

    def end_document(self) -> None:
        self.doc_ends.append(self.tokens)

    def finish(self) -> dict:
        """Closes the last shard and writes the document index; returns the split's metadata."""
        if self._file is not None:
            self._close()
        docs_name = f"{self.split}-docs.npy"
        path = os.path.join(self.directory, docs_name)
        with open(path + PARTIAL, "wb") as f:
            np.save(f, np.asarray(self.doc_ends, dtype=np.int64))
        os.replace(path + PARTIAL, path)
        return {"tokens": self.tokens, "documents": len(self.doc_ends), "shards": self.shards,
                "documents_file": docs_name}


class TokenSplit:
    """One split's token stream, memory-mapped across its shards, and its document index."""

    def __init__(self, directory: str, split: str, meta: dict, dtype: np.dtype):
        self.name = split
        self.shards = [np.memmap(os.path.join(directory, s["file"]), dtype=dtype, mode="r")
                       if s["tokens"] else np.zeros(0, dtype) for s in meta["shards"]]
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])
        self.doc_ends = np.load(os.path.join(directory, meta["documents_file"]))
        self.doc_starts = np.concatenate([[0], self.doc_ends[:-1]]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the split, crossing shard boundaries when needed."""
        k = int(np.searchsorted(self.offsets, start, side="right")) - 1
        local = start - self.offsets[k]
        if stop <= self.offsets[k + 1]:
            return np.asarray(self.shards[k][local:local + stop - start])
        parts = []
        while start < stop:
            k = int(np.searchsorted(self.offsets, start, side="right")) - 1
            end = min(stop, int(self.offsets[k + 1]))
            parts.append(self.shards[k][start - self.offsets[k]:end - self.offsets[k]])
            start = end
        return np.concatenate(parts)

    def read_rows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Rows tokens[start:start+length] for each start, as one (len(starts), length) array."""
        if len(self.shards) == 1:
            return self.shards[0][starts[:, None] + np.arange(length)]
        return np.stack([self.read(int(s), int(s) + length) for s in starts])

    def document_of(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.doc_ends, positions, side="right")


class PreparedData:
    """A directory written by lmjax-prepare, checked against its metadata."""

    def __init__(self, directory: str, metadata: dict, tokenizer: Tokenizer):
        self.directory, self.metadata, self.tokenizer = directory, metadata, tokenizer
        self.dtype = np.dtype(metadata["dtype"])

    def has_split(self, split: str) -> bool:
        return self.metadata["splits"].get(split, {}).get("tokens", 0) > 0

    def split(self, split: str) -> TokenSplit:
        return TokenSplit(self.directory, split, self.metadata["splits"][split], self.dtype)


def is_complete(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, METADATA_FILE))


def read_metadata(directory: str) -> dict:
    with open(os.path.join(directory, METADATA_FILE)) as f:
        return json.load(f)


def open_prepared(directory: str, verify_hashes: bool = False) -> PreparedData:
    """Opens a prepared directory; any mismatch with metadata.json is a one-line UsageError."""
    fix = "re-run lmjax-prepare with --overwrite"
    if not is_complete(directory):
        if os.path.isdir(directory) and any(n.endswith(PARTIAL) or n.endswith(".bin")
                                            for n in os.listdir(directory)):
            raise UsageError(f"{directory}: an lmjax-prepare run did not finish here (no "
                             f"{METADATA_FILE}); {fix}")
        raise UsageError(f"{directory}: no {METADATA_FILE}; this is not a directory written by "
                         "lmjax-prepare")
    try:
        metadata = read_metadata(directory)
        if metadata.get("format") != FORMAT:
            raise KeyError("format")
        dtype = np.dtype(metadata["dtype"])
        splits = metadata["splits"]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{directory}/{METADATA_FILE}: unreadable or not {FORMAT} ({e}); "
                         f"{fix}") from None
    try:
        tokenizer = load_tokenizer(directory)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        raise UsageError(f"{directory}: its tokenizer does not load ({e}); {fix}") from None
    expected = metadata["tokenizer"]
    if tokenizer.fingerprint() != expected["fingerprint"] or \
            tokenizer.vocab_size != expected["vocab_size"]:
        raise UsageError(f"{directory}: the tokenizer differs from the one metadata.json "
                         f"records (hash {tokenizer.fingerprint()} vs {expected['fingerprint']})"
                         f"; the tokens were made with another tokenizer; {fix}")
    for split, meta in splits.items():
        _check_split(directory, split, meta, dtype, verify_hashes, fix)
    return PreparedData(directory, metadata, tokenizer)


def _check_split(directory, split, meta, dtype, verify_hashes, fix):
    total = 0
    for shard in meta["shards"]:
        path = os.path.join(directory, shard["file"])
        expected = shard["tokens"] * dtype.itemsize
        size = os.path.getsize(path) if os.path.exists(path) else None
        if size != expected:
            found = "is missing" if size is None else f"has {size} bytes"
            raise UsageError(f"{path}: {found} but {METADATA_FILE} says {shard['tokens']} "
                             f"{dtype.name} tokens ({expected} bytes); {fix}")
        if verify_hashes:
            with open(path, "rb") as f:
                if hashlib.file_digest(f, "sha256").hexdigest() != shard["sha256"]:
                    raise UsageError(f"{path}: contents differ from the sha256 in "
                                     f"{METADATA_FILE}; {fix}")
        total += shard["tokens"]
    if total != meta["tokens"]:
        raise UsageError(f"{directory}/{METADATA_FILE}: {split} shards hold {total} tokens but "
                         f"the split records {meta['tokens']}; {fix}")
    docs_path = os.path.join(directory, meta["documents_file"])
    try:
        doc_ends = np.load(docs_path, mmap_mode="r")
    except (OSError, ValueError):
        raise UsageError(f"{docs_path}: missing or unreadable; {fix}") from None
    if len(doc_ends) != meta["documents"] or (len(doc_ends) and int(doc_ends[-1]) != total):
        raise UsageError(f"{docs_path}: the document index does not match the {split} shards "
                         f"({len(doc_ends)} documents ending at "
                         f"{int(doc_ends[-1]) if len(doc_ends) else 0}, expected "
                         f"{meta['documents']} ending at {total}); {fix}")


def describe(metadata: dict) -> str:
    parts = []
    for split in SPLITS:
        if split in metadata["splits"]:
            s = metadata["splits"][split]
            parts.append(f"{split} {s['tokens']:,} tokens in {s['documents']:,} documents")
    return ", ".join(parts)


def sources_summary(sources: Sequence[dict]) -> str:
    return f"{len(sources)} files, {sum(s['bytes'] for s in sources):,} bytes"
