"""Training data: what the train loop asks for, whatever the tokenizer or storage.

`make_data(cfg, workdir, process_index, process_count)` returns a `Data` whose `train` iterator
yields host-local numpy batches {"inputs", "targets", "segment_ids", "positions"} (int32, shape
(train.batch_size / process_count, train.seq_len)), saves and restores its position with
get_state()/set_state() (a small JSON-able dict), and whose `eval_batches()` yields the same
held-out batches every time.

`data.path` is a directory written by lmjax-prepare, or raw text (a file, a glob, a directory of
*.txt) that is prepared on first use into WORKDIR/data with the data.* settings.
"""
import dataclasses
import glob
import os
from typing import Callable, Iterator

from lmjax.data.tokenizer import Tokenizer
from lmjax.errors import UsageError

Batch = dict

# The settings prepare() checks, named as the config fields they come from when it runs on
# first use; the output is named by its path (WORKDIR/data).
CONFIG_NAMES = {"input": "data.path", "output": "", "tokenizer": "data.tokenizer",
                "vocab_size": "data.vocab_size", "model_type": "data.model_type",
                "valid_fraction": "data.valid_fraction", "invalid_utf8": "data.invalid_utf8"}


@dataclasses.dataclass
class Data:
    tokenizer: Tokenizer
    train: Iterator[Batch]
    eval_batches: Callable[[], Iterator[Batch]]
    # data.mixture: each source's held-out batches by name (eval_loss/<name>); eval_batches is
    # all of them together.
    eval_sources: dict = dataclasses.field(default_factory=dict)


def is_prepared(path: str) -> bool:
    """Whether data.path is used as it is (a prepared directory), not raw text to prepare."""
    from lmjax.data import store
    return os.path.isdir(path) and (store.is_complete(path) or not glob.glob(
        os.path.join(path, "**", "*.txt"), recursive=True))


def check_settings(cfg) -> None:
    """The data.* settings that prepare raw text on first use, checked before any write."""
    d = cfg.data
    if not d.path or is_prepared(d.path):
        return
    from lmjax.data.prepare import check_settings as check
    check(CONFIG_NAMES, tokenizer=d.tokenizer,
          vocab_size=d.vocab_size if d.tokenizer == "sentencepiece" else 0,
          model_type=d.model_type, valid_fraction=d.valid_fraction, invalid_utf8=d.invalid_utf8)


def prepared_directory(cfg, workdir: str, progress: bool = True, log=print) -> str:
    """The prepared directory for cfg.data.path, preparing raw text into WORKDIR/data once."""
    path = cfg.data.path
    if not path:
        raise UsageError("data.path is empty; set --config.data.path to a text file, a glob or "
                         "a directory written by lmjax-prepare")
    if is_prepared(path):
        return path
    if "://" in str(workdir):
        raise UsageError(f"data.path={path}: raw text is prepared into the workdir on first use, "
                         f"which cannot be the remote {workdir}; run lmjax-prepare once and "
                         "point data.path at the prepared directory on each host")
    from lmjax.data.prepare import prepare
    out = os.path.join(workdir, "data")
    d = cfg.data
    prepare(path, out, tokenizer=d.tokenizer,
            vocab_size=d.vocab_size if d.tokenizer == "sentencepiece" else 0,
            model_type=d.model_type, valid_fraction=d.valid_fraction,
            invalid_utf8=d.invalid_utf8, progress=progress, log=log,
            rebuild_hint=f"delete {out} or use a new --workdir", names=CONFIG_NAMES)
    return out


class _SummaryAfterChecks:
    """prepare()'s log on first use: its closing summary ("wrote ...") is held back until the
    run's own checks of the data pass, so a rejected run prints its error alone (and the data it
    prepared is removed again); "already prepared" is not worth a line."""

    def __init__(self):
        self.held = []

    def __call__(self, message: str) -> None:
        if message.startswith("wrote "):
            self.held.append(message)
        elif not message.endswith("nothing to do (pass --overwrite to rebuild)"):
            print(message, flush=True)

    def flush(self) -> None:
        for message in self.held:
            print(message, flush=True)


def make_data(cfg, workdir: str, process_index: int = 0, process_count: int = 1) -> Data:
    from lmjax.data import pipeline, store
    t = cfg.train
    if t.batch_size % process_count:
        raise UsageError(f"train.batch_size={t.batch_size}: not divisible by the "
                         f"{process_count} processes; use a multiple of {process_count}")
    if cfg.data.mixture:
        return make_mixture(cfg, process_index, process_count)
    log = _SummaryAfterChecks()
    directory = prepared_directory(cfg, workdir, progress=process_index == 0, log=log)
    prepared = store.open_prepared(directory)
    tokenizer = prepared.tokenizer
    check_vocab(tokenizer, cfg.model.vocab_size, cfg.data.path)
    if not prepared.has_split("train"):
        raise UsageError(f"data.path={cfg.data.path}: has no train tokens; prepare it from text")
    try:
        windows = pipeline.PackedWindows(prepared.split("train"), t.seq_len,
                                         cfg.data.window_stride)
    except UsageError as e:
        raise UsageError(f"data.path={cfg.data.path}: {e}") from None
    eval_set = None
    if t.eval_steps > 0:
        if not prepared.has_split("valid"):
            raise UsageError(f"data.path={cfg.data.path}: has no valid split but "
                             f"train.eval_steps={t.eval_steps}; prepare it with a valid fraction "
                             "(data.valid_fraction > 0 for raw text) or valid files, or set "
                             "train.eval_steps=0")
        try:
            eval_set = pipeline.eval_windows(prepared.split("valid"), t.seq_len,
                                             t.eval_steps * t.batch_size)
        except UsageError as e:
            raise UsageError(f"data.path={cfg.data.path}: {e}") from None
    log.flush()
    dataset_id = f"{prepared.metadata['tokenizer']['fingerprint']}:" \
                 f"{prepared.metadata['splits']['train']['tokens']}"
    train = pipeline.TrainIterator(windows, t.batch_size, cfg.seed, process_index,
                                   process_count, cfg.data.prefetch, dataset_id)

    def eval_batches():
        if eval_set is None:
            return iter(())
        return pipeline.eval_batches(eval_set, t.batch_size, t.eval_steps, process_index,
                                     process_count)

    return Data(tokenizer, train, eval_batches)


def make_mixture(cfg, process_index: int, process_count: int) -> Data:
    from lmjax.data import mixture, pipeline, store
    t = cfg.train
    directories = [d for d, _ in cfg.data.mixture]  # validated: prepared, one tokenizer
    prepared = [store.open_prepared(d) for d in directories]
    tokenizer = prepared[0].tokenizer
    check_vocab(tokenizer, cfg.model.vocab_size, directories[0])
    windows, ids, evals = [], [], {}
    for directory, p in zip(directories, prepared):
        if not p.has_split("train"):
            raise UsageError(f"data.mixture: {directory} has no train tokens; prepare it from text")
        windows.append(pipeline.PackedWindows(p.split("train"), t.seq_len, cfg.data.window_stride))
        ids.append(f"{p.metadata['tokenizer']['fingerprint']}:"
                   f"{p.metadata['splits']['train']['tokens']}")
        if t.eval_steps > 0:
            if not p.has_split("valid"):
                raise UsageError(f"data.mixture: {directory} has no valid split but "
                                 f"train.eval_steps={t.eval_steps}; prepare it with a valid "
                                 "fraction, or set train.eval_steps=0")
            evals[mixture.source_name(directory)] = pipeline.eval_windows(
                p.split("valid"), t.seq_len, t.eval_steps * t.batch_size)
    train = mixture.MixtureIterator(windows, [w for _, w in cfg.data.mixture], t.batch_size,
                                    cfg.seed, process_index, process_count, ids)

    def source_batches(eval_set):
        return lambda: pipeline.eval_batches(eval_set, t.batch_size, t.eval_steps,
                                             process_index, process_count)

    eval_sources = {name: source_batches(e) for name, e in evals.items()}

    def eval_batches():
        for batches in eval_sources.values():
            yield from batches()

    return Data(tokenizer, train, eval_batches, eval_sources)


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int, where: str) -> None:
    """A model must have an embedding row for every id the tokenizer can produce."""
    if tokenizer.vocab_size > model_vocab_size:
        raise UsageError(f"model.vocab_size={model_vocab_size}: smaller than the tokenizer's "
                         f"{tokenizer.vocab_size} ids ({tokenizer.kind}, {where}); set "
                         f"--config.model.vocab_size={tokenizer.vocab_size} or more")
