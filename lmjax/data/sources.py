"""Raw text inputs: finding the files, checking them, cutting them into documents and chunks.

Every check happens here, before lmjax-prepare writes anything: a glob that matches nothing, an
empty file, bytes that are not UTF-8 (an error naming file and offset, or with
`invalid_utf8="replace"` each bad byte becomes U+FFFD and the count is reported). Messages name
settings by `names` (setting -> how the caller spells it: prepare's flags, or config fields when
a training run prepares on first use).
One input file is one document. With a valid fraction, the last fraction of the bytes (at a line
boundary) is held out, so the file it falls in becomes two documents, one per split.
"""
import dataclasses
import glob
import os
from typing import Iterator, Sequence

from lmjax.errors import UsageError

CHUNK_BYTES = 1 << 18  # lines are encoded in chunks of about this size
# How lmjax-prepare's flags name the settings the checks below refer to.
FLAG_NAMES = {"input": "--input", "output": "--output", "tokenizer": "--tokenizer",
              "vocab_size": "--vocab_size", "model_type": "--model_type",
              "tokenizer_model": "--tokenizer_model", "valid_files": "--valid_files",
              "valid_fraction": "--valid_fraction", "invalid_utf8": "--invalid_utf8",
              "shard_tokens": "--shard_tokens", "workers": "--workers",
              "input_sentence_size": "--input_sentence_size"}


@dataclasses.dataclass(frozen=True)
class Chunk:
    path: str
    start: int
    end: int
    document: int  # index into the plan's documents
    last: bool  # the document's final chunk


@dataclasses.dataclass
class Document:
    path: str
    start: int
    end: int
    split: str


def resolve_inputs(spec: str, flag: str) -> list[str]:
    """Comma-separated files, globs or directories (all *.txt under them), sorted, unique."""
    files = []
    for item in [s for s in spec.split(",") if s.strip()]:
        item = os.path.expanduser(item.strip())
        if os.path.isdir(item):
            found = sorted(glob.glob(os.path.join(item, "**", "*.txt"), recursive=True))
            if not found:
                raise UsageError(f"{flag}={item}: the directory holds no *.txt files")
        else:
            found = sorted(p for p in glob.glob(item) if os.path.isfile(p))
            if not found:
                raise UsageError(f"{flag}={item}: matches no files; check the path or glob")
        files.extend(os.path.abspath(p) for p in found)
    if not files:
        raise UsageError(f"{flag} is empty; pass text files, a glob or a directory")
    return list(dict.fromkeys(files))


def utf8_boundary(data: bytes, cut: int) -> int:
    """Moves `cut` back so it does not split a multi-byte UTF-8 character."""
    while 0 < cut < len(data) and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut


def chunk_bounds(path: str, start: int, end: int, size: int = CHUNK_BYTES):
    """Yields (start, end, bytes) pieces of [start, end), each cut after a newline if it has one
    (else before a UTF-8 character), so that no line or character is split between chunks."""
    with open(path, "rb") as f:
        f.seek(start)
        pos, carry = start, b""
        while pos < end:
            want = min(size, end - pos - len(carry))
            new = f.read(want)
            data = carry + new
            if want and not new:
                raise UsageError(f"{path}: the file shrank while it was being read; "
                                 "do not change inputs during lmjax-prepare")
            if pos + len(data) >= end:
                cut = len(data)
            else:
                newline = data.rfind(b"\n")
                cut = newline + 1 if newline >= 0 else utf8_boundary(data, len(data) - 1)
                cut = cut or len(data)
            yield pos, pos + cut, data[:cut]
            carry = data[cut:]
            pos += cut


def decode(data: bytes, path: str, offset: int, invalid_utf8: str,
           names=FLAG_NAMES) -> str:
    return decode_counted(data, path, offset, invalid_utf8, names)[0]


def decode_counted(data: bytes, path: str, offset: int, invalid_utf8: str,
                   names=FLAG_NAMES) -> tuple[str, int]:
    """(text, bytes replaced by U+FFFD); with invalid_utf8="error" a bad byte is a UsageError.

    Replacement matches Python's "replace" handler (one U+FFFD per invalid sequence), counted
    here rather than in a registered handler so that no count outlives one call.
    """
    try:
        return str(data, "utf-8"), 0
    except UnicodeDecodeError as e:
        if invalid_utf8 != "replace":
            raise UsageError(f"{path}: byte 0x{data[e.start]:02x} at offset {offset + e.start} "
                             "is not UTF-8; convert the file (e.g. iconv -f latin1 -t utf-8) "
                             f"or set {names['invalid_utf8']}=replace") from None
    view, pieces, replaced, pos = memoryview(data), [], 0, 0
    while True:
        try:
            pieces.append(str(view[pos:], "utf-8"))
            return "".join(pieces), replaced
        except UnicodeDecodeError as e:
            pieces.append(str(view[pos:pos + e.start], "utf-8"))
            pieces.append("\ufffd")
            replaced += e.end - e.start
            pos += e.end


@dataclasses.dataclass
class Plan:
    documents: list[Document]
    chunks: list[Chunk]
    sources: list[dict]
    replaced_bytes: int
    characters: str  # every distinct character, sorted (for the char tokenizer)

    def split_bytes(self, split: str) -> int:
        return sum(d.end - d.start for d in self.documents if d.split == split)


def scan(train_files: Sequence[str], valid_files: Sequence[str], valid_fraction: float,
         invalid_utf8: str = "error", collect_characters: bool = False,
         progress: bool = True, names=FLAG_NAMES) -> Plan:
    """Reads every input once: checks it, and cuts it into documents and encoding chunks."""
    from tqdm import tqdm
    sizes = {}
    for path in list(train_files) + list(valid_files):
        size = os.path.getsize(path)
        if size == 0:
            raise UsageError(f"{path}: the file is empty; remove it from the input")
        sizes[path] = size
    documents = _documents(train_files, valid_files, valid_fraction, sizes)
    characters: set[str] = set()
    chunks, replaced = [], 0
    total = sum(sizes.values())
    # Shown only if the check takes a while, so that a quick rejection prints its error alone.
    with tqdm(total=total, unit="B", unit_scale=True, desc="check", disable=not progress,
              leave=False, delay=1.0) as bar:
        for index, doc in enumerate(documents):
            pieces = []
            for start, end, data in chunk_bounds(doc.path, doc.start, doc.end):
                text, bad = decode_counted(data, doc.path, start, invalid_utf8, names)
                replaced += bad
                if collect_characters:
                    characters.update(text)
                pieces.append((start, end))
            for k, (start, end) in enumerate(pieces):
                chunks.append(Chunk(doc.path, start, end, index, k == len(pieces) - 1))
                bar.update(end - start)
    for split in ("train", "valid"):
        if valid_fraction > 0 or valid_files or split == "train":
            if not any(d.split == split for d in documents):
                raise UsageError(f"{names['valid_fraction']}={valid_fraction}: the input is too small to "
                                 f"hold out a {split} split; add text or change the fraction")
    sources = [{"path": p, "bytes": sizes[p],
                "split": "+".join(sorted({d.split for d in documents if d.path == p}))}
               for p in sizes]
    return Plan(documents, chunks, sources, replaced, "".join(sorted(characters)))


def _documents(train_files, valid_files, valid_fraction, sizes) -> list[Document]:
    if valid_files or valid_fraction <= 0:
        return ([Document(p, 0, sizes[p], "train") for p in train_files] +
                [Document(p, 0, sizes[p], "valid") for p in valid_files])
    total = sum(sizes[p] for p in train_files)
    cut_at = int(total * (1 - valid_fraction))
    documents, seen = [], 0
    for path in train_files:
        size = sizes[path]
        if seen + size <= cut_at:
            documents.append(Document(path, 0, size, "train"))
        elif seen >= cut_at:
            documents.append(Document(path, 0, size, "valid"))
        else:
            cut = _cut_point(path, cut_at - seen, size)
            if cut > 0:
                documents.append(Document(path, 0, cut, "train"))
            if cut < size:
                documents.append(Document(path, cut, size, "valid"))
        seen += size
    return documents


def _cut_point(path: str, offset: int, size: int) -> int:
    """The first line start at or after `offset` (else a UTF-8 boundary at offset)."""
    with open(path, "rb") as f:
        f.seek(offset)
        window = f.read(1 << 16)
        newline = window.find(b"\n")
        if newline >= 0 and offset + newline + 1 < size:
            return offset + newline + 1
        f.seek(max(0, offset - 4))
        head = f.read(8)
    return max(0, offset - 4) + utf8_boundary(head, offset - max(0, offset - 4))


def train_lines(plan: Plan, invalid_utf8: str, names=FLAG_NAMES) -> Iterator[str]:
    """The train split's lines without newlines, streamed (SentencePiece samples them)."""
    for chunk in plan.chunks:
        if plan.documents[chunk.document].split != "train":
            continue
        with open(chunk.path, "rb") as f:
            f.seek(chunk.start)
            text = decode(f.read(chunk.end - chunk.start), chunk.path, chunk.start, invalid_utf8,
                          names)
        yield from text.split("\n")
