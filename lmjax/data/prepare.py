"""lmjax-prepare: raw text -> tokenizer + token shards + metadata.json (see store.py for layout).

  lmjax-prepare --input='corpus/*.txt' --output=data/corpus --tokenizer=sentencepiece \\
      --vocab_size=8000 [--model_type=bpe|unigram] [--valid_files=... | --valid_fraction=0.1]
      [--workers=K] [--tokenizer_model=EXISTING.model]
  lmjax-prepare --input=lmjax/data/tinyshakespeare.txt --output=data/sc --tokenizer=char

Everything that can be wrong with the input is found before the first write. Encoding runs in
`--workers` processes over chunks of lines; ids go to shards in input order with an end-of-
document id after every document. Re-running on a finished directory with the same settings
does nothing; --overwrite rebuilds it. Messages name each setting as the caller spells it
(`names`: prepare's flags by default, config fields when a training run prepares on first use).
"""
import contextlib
import fcntl
import multiprocessing
import os
import sys
import time

import numpy as np

from lmjax.cli import ArgumentParser
from lmjax.data import sources as src
from lmjax.data import store
from lmjax.data.tokenizer import ByteTokenizer, CharTokenizer, Tokenizer
from lmjax.data.tokenizers import load_tokenizer
from lmjax.errors import UsageError

DEFAULT_SHARD_TOKENS = 1 << 28
TOKENIZERS = ("sentencepiece", "char", "bytes")


def _log(message: str) -> None:
    print(message, flush=True)


def prepare(inputs, output: str, *, tokenizer: str = "sentencepiece", vocab_size: int = 0,
            model_type: str = "bpe", valid_files="", valid_fraction: float | None = None,
            workers: int = 0, tokenizer_model: str = "", overwrite: bool = False, seed: int = 0,
            input_sentence_size: int = 10_000_000, shard_tokens: int = DEFAULT_SHARD_TOKENS,
            invalid_utf8: str = "error", progress: bool = True, log=_log,
            rebuild_hint: str = "pass --overwrite to rebuild it or choose another --output",
            names=src.FLAG_NAMES) -> dict:
    """Prepares `output` from `inputs` (a spec string or a list of files); returns its metadata.

    `names` maps each setting to how messages name it; a setting the caller cannot set may be
    absent, and `names["output"] = ""` names the output by its path alone.
    """
    started = time.perf_counter()
    n = _Names(names)
    check_settings(n, tokenizer=tokenizer, vocab_size=vocab_size, model_type=model_type,
                   valid_files=valid_files, valid_fraction=valid_fraction,
                   invalid_utf8=invalid_utf8, tokenizer_model=tokenizer_model,
                   shard_tokens=shard_tokens, workers=workers,
                   input_sentence_size=input_sentence_size)
    if valid_fraction is None:
        valid_fraction = 0.0 if valid_files else 0.1
    train_files = _files(inputs, n["input"])
    held_out = _files(valid_files, n["valid_files"]) if valid_files else []
    both = sorted(set(train_files) & set(held_out))
    if both:
        raise UsageError(f"{n['valid_files']}: {both[0]} is also in {n['input']}; a file belongs "
                         "to one split")
    reused = None
    if tokenizer_model:
        from lmjax.data.sentencepiece import load_model_file
        reused = load_model_file(tokenizer_model)
        if vocab_size and vocab_size != reused.vocab_size:
            raise UsageError(f"{n['vocab_size']}={vocab_size}: {n['tokenizer_model']} has "
                             f"{reused.vocab_size} pieces; drop {n['vocab_size']}")
    settings = {"tokenizer": tokenizer, "vocab_size": 0 if reused else vocab_size,
                "model_type": model_type if tokenizer == "sentencepiece" and not reused else "",
                "tokenizer_model": reused.fingerprint() if reused else "",
                "valid_fraction": valid_fraction, "seed": seed,
                "input_sentence_size": input_sentence_size, "invalid_utf8": invalid_utf8}
    sizes = [[p, os.path.getsize(p)] for p in train_files + held_out]

    if os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"{n.value('output', output)}: is a file; pass a directory")
    parent = os.path.dirname(os.path.abspath(output))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise UsageError(f"{n.value('output', output)}: cannot be created ({parent} is not a "
                         "writable directory); pick another place")
    foreign = store.foreign_files(output)
    if foreign:
        raise UsageError(f"{n.value('output', output)}: holds files lmjax-prepare did not write "
                         f"({', '.join(foreign[:3])}); choose an empty or new directory")
    finished = _finished(n, output, settings, sizes, overwrite, rebuild_hint)
    if finished:
        log(f"{output}: already prepared with these settings ({store.describe(finished)}); "
            "nothing to do (pass --overwrite to rebuild)")
        return finished

    plan = src.scan(train_files, held_out, valid_fraction, invalid_utf8,
                    collect_characters=tokenizer == "char", progress=progress, names=n)
    checked = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    tok = _make_tokenizer(tokenizer, plan, reused, vocab_size, model_type, seed, workers,
                          input_sentence_size, invalid_utf8, log, n)
    trained = time.perf_counter()

    os.makedirs(output, exist_ok=True)
    with _locked(output):
        finished = _finished(n, output, settings, sizes, overwrite, rebuild_hint)
        if finished:  # another process finished it while this one waited for the lock
            return finished
        store.remove_own_files(output)
        tok.save(output)
        dtype = store.token_dtype(tok.vocab_size)
        splits = _encode(plan, output, tok, dtype, workers, shard_tokens, invalid_utf8,
                         progress)
        encoded = time.perf_counter()
        metadata = {
            "format": store.FORMAT, "dtype": dtype.name,
            "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size,
                          "fingerprint": tok.fingerprint(), "bos_id": tok.bos_id,
                          "eos_id": tok.eos_id, "pad_id": tok.pad_id,
                          "unk_id": getattr(tok, "unk_id", -1)},
            "splits": splits,
            "bytes": {s: plan.split_bytes(s) for s in splits},
            "sources": plan.sources, "source_sizes": sizes,
            "replaced_bytes": plan.replaced_bytes,
            "settings": settings,
            "seconds": {"check": round(checked - started, 3),
                        "tokenizer": round(trained - checked, 3),
                        "encode": round(encoded - trained, 3)},
        }
        store.write_json_atomic(os.path.join(output, store.METADATA_FILE), metadata)
    total_bytes = sum(metadata["bytes"].values())
    log(f"wrote {output}: {store.describe(metadata)}; {tok.kind} vocab {tok.vocab_size} "
        f"({dtype.name}); {store.sources_summary(plan.sources)} encoded at "
        f"{total_bytes / 1e6 / max(encoded - trained, 1e-9):.2f} MB/s"
        + (f"; {plan.replaced_bytes} invalid UTF-8 bytes replaced by U+FFFD"
           if plan.replaced_bytes else ""))
    return metadata


class _Names(dict):
    """Setting -> its name in messages; `value(key, v)` is "name=v", or v alone if unnamed."""

    def __missing__(self, key):
        return key

    def value(self, key, value) -> str:
        return f"{self[key]}={value}" if self.get(key) else str(value)


def check_settings(names=src.FLAG_NAMES, *, tokenizer: str = "sentencepiece",
                   vocab_size: int = 0, model_type: str = "bpe", valid_files="",
                   valid_fraction: float | None = None, invalid_utf8: str = "error",
                   tokenizer_model: str = "", shard_tokens: int = DEFAULT_SHARD_TOKENS,
                   workers: int = 0, input_sentence_size: int = 1):
    """UsageError, naming the setting by `names`, for any setting prepare() cannot use."""
    n = _Names(names)
    if tokenizer not in TOKENIZERS:
        raise UsageError(f"{n['tokenizer']}={tokenizer}: must be one of {', '.join(TOKENIZERS)}")
    if tokenizer == "sentencepiece" and not tokenizer_model and vocab_size <= 0:
        reuse = (f", unless {n['tokenizer_model']} reuses a trained model"
                 if "tokenizer_model" in n else "")
        raise UsageError(f"{n['vocab_size']}: required with {n['tokenizer']}=sentencepiece "
                         f"(e.g. 8000){reuse}")
    if tokenizer != "sentencepiece" and (vocab_size or tokenizer_model):
        named = n["vocab_size"] if not tokenizer_model else n["tokenizer_model"]
        raise UsageError(f"{named}: only applies to {n['tokenizer']}=sentencepiece, not "
                         f"{tokenizer}")
    if model_type not in ("bpe", "unigram"):
        raise UsageError(f"{n['model_type']}={model_type}: must be bpe or unigram")
    if valid_files and valid_fraction:
        raise UsageError(f"{n['valid_files']} and {n['valid_fraction']}: pass one of them, "
                         "not both")
    if valid_fraction is not None and not 0 <= valid_fraction < 1:
        raise UsageError(f"{n['valid_fraction']}={valid_fraction}: must be in [0, 1)")
    if invalid_utf8 not in ("error", "replace"):
        raise UsageError(f"{n['invalid_utf8']}={invalid_utf8}: must be error or replace")
    if shard_tokens <= 0:
        raise UsageError(f"{n['shard_tokens']}={shard_tokens}: must be > 0")
    if workers < 0:
        raise UsageError(f"{n['workers']}={workers}: must be >= 0 (0 = one per CPU)")
    if input_sentence_size <= 0:
        raise UsageError(f"{n['input_sentence_size']}={input_sentence_size}: must be > 0")


def _files(spec, flag):
    if isinstance(spec, (list, tuple)):
        spec = ",".join(spec)
    return src.resolve_inputs(spec, flag)


def _finished(n, output, settings, sizes, overwrite, rebuild_hint) -> dict | None:
    """The metadata of a finished output made the same way, None if absent; refuses others."""
    if not store.is_complete(output):
        return None
    try:
        metadata = store.read_metadata(output)
    except ValueError:
        metadata = {}
    if overwrite:
        return None
    old_settings, old_sizes = metadata.get("settings", {}), metadata.get("source_sizes")
    changed = [f"{k}: {old_settings.get(k)!r} -> {v!r}" for k, v in settings.items()
               if old_settings.get(k) != v]
    if old_sizes != sizes:
        changed.append("the input files or their sizes")
    if changed:
        raise UsageError(f"{n.value('output', output)}: already holds data prepared differently "
                         f"({'; '.join(changed[:3])}); {rebuild_hint}")
    return metadata


@contextlib.contextmanager
def _locked(directory):
    """Serialises prepares of one directory (e.g. every host preparing on first use)."""
    with open(os.path.join(directory, ".prepare.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _make_tokenizer(kind, plan, reused, vocab_size, model_type, seed, workers,
                    input_sentence_size, invalid_utf8, log, names) -> Tokenizer:
    if reused is not None:
        return reused
    if kind == "char":
        return CharTokenizer(plan.characters)
    if kind == "bytes":
        return ByteTokenizer()
    from lmjax.data.sentencepiece import train_sentencepiece
    log(f"training SentencePiece {model_type} with {vocab_size} pieces on "
        f"{plan.split_bytes('train'):,} bytes (up to {input_sentence_size:,} sampled lines)")
    return train_sentencepiece(src.train_lines(plan, invalid_utf8, names), vocab_size, model_type,
                               seed=seed, threads=workers,
                               input_sentence_size=input_sentence_size,
                               vocab_size_name=names["vocab_size"])


# Encoding runs in worker processes: each loads the saved tokenizer once, then reads, decodes
# and encodes the chunks it is handed, so only ids travel back to the writer.
_WORKER: dict = {}


def _init_worker(tokenizer_dir: str, dtype: str, invalid_utf8: str) -> None:
    _WORKER.update(tokenizer=load_tokenizer(tokenizer_dir), dtype=np.dtype(dtype),
                   invalid_utf8=invalid_utf8)


def _encode_chunk(chunk: src.Chunk) -> np.ndarray:
    with open(chunk.path, "rb") as f:
        f.seek(chunk.start)
        data = f.read(chunk.end - chunk.start)
    text = src.decode(data, chunk.path, chunk.start, _WORKER["invalid_utf8"])
    return _WORKER["tokenizer"].encode_array(text, dtype=_WORKER["dtype"])


def _encode(plan, output, tok, dtype, workers, shard_tokens, invalid_utf8, progress) -> dict:
    from tqdm import tqdm
    writers = {split: store.SplitWriter(output, split, dtype, shard_tokens)
               for split in dict.fromkeys(d.split for d in plan.documents)}
    total = sum(c.end - c.start for c in plan.chunks)
    # Worker start-up costs about a second: small or char/bytes inputs encode in-process.
    parallel = workers > 1 and tok.kind == "sentencepiece" and len(plan.chunks) >= 2 * workers
    with contextlib.ExitStack() as stack:
        if parallel:
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(
                workers, _init_worker, (output, dtype.name, invalid_utf8)))
            results = pool.imap(_encode_chunk, plan.chunks, chunksize=1)
        else:
            _init_worker(output, dtype.name, invalid_utf8)
            results = map(_encode_chunk, plan.chunks)
        bar = stack.enter_context(tqdm(total=total, unit="B", unit_scale=True, desc="encode",
                                       disable=not progress, delay=1.0))
        for chunk, ids in zip(plan.chunks, results):
            writer = writers[plan.documents[chunk.document].split]
            writer.write(ids)
            if chunk.last:
                if tok.eos_id >= 0:
                    writer.write(np.asarray([tok.eos_id]))
                writer.end_document()
            bar.update(chunk.end - chunk.start)
    return {split: writer.finish() for split, writer in writers.items()}


def main(argv=None) -> int:
    p = ArgumentParser(prog="lmjax-prepare", description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True,
                   help="text files, globs or directories (*.txt), comma-separated")
    p.add_argument("--output", required=True, help="directory to write")
    p.add_argument("--tokenizer", default="sentencepiece", choices=TOKENIZERS)
    p.add_argument("--vocab_size", type=int, default=0)
    p.add_argument("--model_type", default="bpe", choices=("bpe", "unigram"))
    p.add_argument("--tokenizer_model", default="",
                   help="reuse this SentencePiece .model (or a prepared directory's tokenizer)")
    p.add_argument("--valid_files", default="", help="held-out files (instead of a fraction)")
    p.add_argument("--valid_fraction", type=float, default=None,
                   help="hold out the last fraction of the input bytes (default 0.1)")
    p.add_argument("--workers", type=int, default=0, help="encoding processes (0 = CPU count)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input_sentence_size", type=int, default=10_000_000,
                   help="lines SentencePiece samples for training")
    p.add_argument("--shard_tokens", type=int, default=DEFAULT_SHARD_TOKENS)
    p.add_argument("--invalid_utf8", default="error", choices=("error", "replace"),
                   help="bytes that are not UTF-8: fail, or replace each with U+FFFD")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no_progress", action="store_true")
    args = p.parse_args(argv)
    try:
        prepare(args.input, args.output, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                model_type=args.model_type, valid_files=args.valid_files,
                valid_fraction=args.valid_fraction, workers=args.workers,
                tokenizer_model=args.tokenizer_model, overwrite=args.overwrite, seed=args.seed,
                input_sentence_size=args.input_sentence_size, shard_tokens=args.shard_tokens,
                invalid_utf8=args.invalid_utf8, progress=not args.no_progress)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
