"""`lmjax-eval`: loss, perplexity and bits per byte of a model on text files.

  lmjax-eval --model=WORKDIR|EXPORT_DIR|hf:DIR --text=FILE [FILE...] [--seq_len=N --stride=N
             --batch_size=N]
  lmjax-eval --model=... --tasks=TASK[,TASK...]   lm-eval tasks instead (lmjax.infer.harness)

Each file is tokenized whole (led by BOS when the tokenizer's models expect one) and scored with
a sliding window: windows of seq_len tokens start every `stride` tokens, and each window scores
only the targets no earlier window scored, so every token after the first is predicted exactly
once, with up to seq_len - stride tokens of context carried over. Prints a table, then a final
JSON line {"loss", "perplexity", "bits_per_byte", "tokens", "bytes"} over all files.
bits_per_byte = total nats / ln 2 / UTF-8 bytes of the scored text (the first token's bytes are
not scored when there is no BOS).
"""
import json
import math
import os
import sys

import jax
import numpy as np

from lmjax.parallel import mesh as mesh_lib
from lmjax.parallel import shardings as sharding
from lmjax.parallel.context import context
from lmjax.errors import UsageError
from lmjax.train.step import cross_entropy


def windows(num_tokens: int, seq_len: int, stride: int):
    """(start, first scored target offset, end) per window over ids[0:num_tokens].

    A window feeds ids[start:end] and predicts ids[start+1:end+1]; targets at offsets >= first
    within the window are new.
    """
    out, scored_until, start = [], 0, 0  # targets 1..scored_until are done
    last_target = num_tokens - 1
    while scored_until < last_target:
        end = min(start + seq_len, last_target)
        first = scored_until - start  # offset of the first new target (target index start+1+j)
        out.append((start, max(first, 0), end))
        scored_until = end
        start += stride
    return out


def window_batches(ids: np.ndarray, seq_len: int, stride: int, batch_size: int):
    """Yields {"inputs", "targets", "weights"} of shape (batch_size, seq_len), zero-padded."""
    spans = windows(len(ids), seq_len, stride)
    for i in range(0, len(spans), batch_size):
        inputs = np.zeros((batch_size, seq_len), np.int32)
        targets = np.zeros((batch_size, seq_len), np.int32)
        weights = np.zeros((batch_size, seq_len), np.float32)
        for row, (start, first, end) in enumerate(spans[i:i + batch_size]):
            n = end - start
            inputs[row, :n] = ids[start:end]
            targets[row, :n] = ids[start + 1:end + 1]
            weights[row, first:n] = 1.0
        yield {"inputs": inputs, "targets": targets, "weights": weights}


class Scorer:
    """Summed next-token loss (nats) and token count of batches, jitted on the model's mesh."""

    def __init__(self, cfg, model, params, mesh=None):
        self.mesh = mesh if mesh is not None else mesh_lib.make_mesh(cfg)
        self.rules = sharding.rules(cfg)
        self.context = lambda: context(self.mesh, self.rules)
        self.batch_sh = sharding.batch_sharding(self.mesh, self.rules)
        self.batch_shards = mesh_lib.batch_shards(self.mesh)
        self.params = params

        def score(params, batch):
            logits = model.apply({"params": params}, batch["inputs"])
            return cross_entropy(logits, batch["targets"], batch["weights"])

        self._score = jax.jit(score)

    def __call__(self, batch) -> tuple[float, float]:
        with self.context():
            total, count = self._score(self.params, sharding.global_batch(batch, self.batch_sh))
        return float(total), float(count)


def text_ids(tokenizer, text: str) -> np.ndarray:
    ids = np.asarray(tokenizer.encode(text), np.int64)
    if getattr(tokenizer, "add_bos", False) and tokenizer.bos_id >= 0:
        ids = np.concatenate([[tokenizer.bos_id], ids])
    return ids


def scored_bytes(tokenizer, text: str, ids) -> int:
    total = len(text.encode("utf-8"))
    if not (getattr(tokenizer, "add_bos", False) and tokenizer.bos_id >= 0):
        total -= len(tokenizer.decode([int(ids[0])]).encode("utf-8"))
    return total


def evaluate_file(scorer: Scorer, tokenizer, path: str, seq_len: int, stride: int,
                  batch_size: int, progress: bool = True) -> dict:
    from tqdm import tqdm
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise UsageError(f"--text={path}: not UTF-8 text (byte {e.start}); convert it to "
                         "UTF-8") from None
    try:
        ids = text_ids(tokenizer, text)
    except UsageError as e:  # text the tokenizer cannot encode
        raise UsageError(f"--text={path}: {e}") from None
    if len(ids) < 2:
        raise UsageError(f"--text={path}: has {len(ids)} token(s); at least 2 are needed to "
                         "score one prediction")
    total, count = 0.0, 0.0
    n_windows = len(windows(len(ids), seq_len, stride))
    bar = tqdm(total=n_windows, desc=os.path.basename(path), unit="window", file=sys.stderr,
               disable=not progress, leave=False)
    for batch in window_batches(ids, seq_len, stride, batch_size):
        s, c = scorer(batch)
        total, count = total + s, count + c
        bar.update(int((batch["weights"].sum(1) > 0).sum()))
    bar.close()
    return {"file": path, "nats": total, "tokens": int(count),
            "bytes": scored_bytes(tokenizer, text, ids)}


def summarize(nats: float, tokens: int, nbytes: int) -> dict:
    loss = nats / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(loss),
            "bits_per_byte": nats / math.log(2) / max(nbytes, 1), "tokens": tokens,
            "bytes": nbytes}


def parse_args(argv):
    from lmjax.cli import ArgumentParser
    parser = ArgumentParser(prog="lmjax-eval", description=(
        "Score text files with a sliding window: loss (nats/token), perplexity, bits per byte."))
    parser.add_argument("--model", required=True,
                        help="a training workdir, an lmjax-export directory, or hf:DIR")
    parser.add_argument("--text", nargs="+", help="UTF-8 text file(s)")
    parser.add_argument("--tasks", help="lm-eval tasks, comma separated, instead of --text "
                        "(see lmjax/eval_tasks)")
    parser.add_argument("--limit", type=int, default=None, help="--tasks: examples per task")
    parser.add_argument("--include_path", nargs="+", help="--tasks: more task YAML directories")
    parser.add_argument("--include_defaults", action="store_true",
                        help="--tasks: also lm-eval's own tasks (their data must be cached)")
    parser.add_argument("--num_fewshot", type=int, default=None)
    parser.add_argument("--max_length", type=int, default=0,
                        help="--tasks: context in tokens (default model.max_seq_len)")
    parser.add_argument("--seq_len", type=int, default=0,
                        help="window length (default: the run's train.seq_len, or "
                             "model.max_seq_len for hf: models)")
    parser.add_argument("--stride", type=int, default=0, help="default: seq_len // 2")
    parser.add_argument("--batch_size", type=int, default=None, help="default 8 (16 with --tasks)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of a workdir")
    parser.add_argument("--no_progress", action="store_true")
    return parser.parse_args(argv)


def run(args, out=print) -> dict:
    if bool(args.text) == bool(args.tasks):
        raise UsageError("give either --text=FILE... (perplexity) or --tasks=NAME,... (lm-eval "
                         "tasks)")
    if args.batch_size is not None and args.batch_size <= 0:
        raise UsageError(f"--batch_size={args.batch_size}: must be > 0")
    if args.tasks:
        from lmjax.infer import harness
        return harness.run(args, out)
    args.batch_size = args.batch_size or 8
    for path in args.text:
        if not os.path.isfile(path):
            raise UsageError(f"--text={path}: no such file")
        if os.path.getsize(path) == 0:
            raise UsageError(f"--text={path}: the file is empty; give a file with text in it")
    if args.batch_size <= 0:
        raise UsageError(f"--batch_size={args.batch_size}: must be > 0")
    from lmjax.hf import HF_PREFIX, load_model
    loaded = load_model(args.model, args.step)
    if loaded.tokenizer is None:
        raise UsageError(f"--model={args.model}: has no tokenizer (tokenizer.json or "
                         "tokenizer.model), so text cannot be scored")
    m = loaded.cfg.model
    default_len = m.max_seq_len if args.model.startswith(HF_PREFIX) else loaded.cfg.train.seq_len
    seq_len = args.seq_len or min(default_len, 1024)
    if not 0 < seq_len <= m.max_seq_len:
        raise UsageError(f"--seq_len={seq_len}: must lie in 1..model.max_seq_len={m.max_seq_len}")
    stride = args.stride or max(1, seq_len // 2)
    if not 0 < stride <= seq_len:
        raise UsageError(f"--stride={stride}: must lie in 1..seq_len={seq_len}")
    scorer = Scorer(loaded.cfg, loaded.model, loaded.params)
    batch_size = -(-args.batch_size // scorer.batch_shards) * scorer.batch_shards
    results = [evaluate_file(scorer, loaded.tokenizer, path, seq_len, stride, batch_size,
                             not args.no_progress) for path in args.text]
    width = max(12, *(len(r["file"]) for r in results))
    out(f"{'file':<{width}}  {'tokens':>10}  {'bytes':>10}  {'loss':>8}  {'ppl':>10}  "
        f"{'bits/byte':>9}")
    for r in results + [{"file": "total", "nats": sum(r["nats"] for r in results),
                         "tokens": sum(r["tokens"] for r in results),
                         "bytes": sum(r["bytes"] for r in results)}]:
        s = summarize(r["nats"], r["tokens"], r["bytes"])
        out(f"{r['file']:<{width}}  {s['tokens']:>10,}  {s['bytes']:>10,}  {s['loss']:>8.4f}  "
            f"{s['perplexity']:>10.3f}  {s['bits_per_byte']:>9.4f}")
    final = summarize(sum(r["nats"] for r in results), sum(r["tokens"] for r in results),
                      sum(r["bytes"] for r in results))
    out(json.dumps(final))
    return final


def main(argv=None):
    from lmjax.cli import run_command
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run_command(lambda: run(args))


if __name__ == "__main__":
    main()
