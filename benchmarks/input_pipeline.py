"""Input pipeline throughput: lmjax-prepare against SentencePiece's own encoder, and the loader
against what training consumes.

    python benchmarks/input_pipeline.py CORPUS [--vocab_size=8000] [--repeats=3] [--workers=0]

CORPUS is text files, a glob or a directory of *.txt. The script trains a SentencePiece model on
it once (timed), then alternates, `--repeats` times:
  raw      SentencePiece's Python encoder: all lines in one encode() call, 2 threads, text
           already in memory (no reading, no writing)
  prepare  lmjax-prepare reusing that model: check + read + encode in worker processes + write
           shards, start to finish
and prints medians and their ratio. Then it times the loader (grain pipeline over the prepared
shards, default prefetch) at the baby shakespeare_char shape, batch 12 x seq 64, whose training
consumes ~12.3k tokens/s (60 ms/step), and at a larger shape.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time



def raw_encode_seconds(model_path: str, files: list[str], threads: int) -> float:
    import sentencepiece as spm
    processor = spm.SentencePieceProcessor(model_file=model_path)
    lines = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            lines.extend(f.read().split("\n"))
    start = time.perf_counter()
    processor.encode(lines, num_threads=threads)
    return time.perf_counter() - start


def prepare_seconds(corpus: str, out: str, model_path: str, workers: int) -> float:
    from lmjax.data.prepare import prepare
    start = time.perf_counter()
    prepare(corpus, out, tokenizer_model=model_path, valid_fraction=0.01, workers=workers,
            overwrite=True, progress=False, log=lambda _: None)
    return time.perf_counter() - start


def loader_tokens_per_second(directory: str, batch: int, seq_len: int, steps: int,
                             prefetch: int) -> float:
    from lmjax.data import pipeline, store
    prepared = store.open_prepared(directory)
    windows = pipeline.PackedWindows(prepared.split("train"), seq_len)
    iterator = pipeline.TrainIterator(windows, batch, seed=0, process_index=0, process_count=1,
                                      prefetch=prefetch, dataset_id="bench")
    next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    elapsed = time.perf_counter() - start
    iterator.close()
    return steps * batch * seq_len / elapsed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("corpus")
    p.add_argument("--vocab_size", type=int, default=8000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=0, help="prepare processes (0 = CPU count)")
    p.add_argument("--raw_threads", type=int, default=2)
    p.add_argument("--loader_steps", type=int, default=3000)
    p.add_argument("--plot", default="", help="also draw the figures to this PNG")
    args = p.parse_args(argv)

    from lmjax.data.prepare import prepare
    from lmjax.data.sources import resolve_inputs
    files = resolve_inputs(args.corpus, "corpus")
    megabytes = sum(os.path.getsize(f) for f in files) / 1e6
    workers = args.workers or os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        trained = os.path.join(tmp, "trained")
        start = time.perf_counter()
        meta = prepare(args.corpus, trained, vocab_size=args.vocab_size, valid_fraction=0.01,
                       workers=workers, progress=False, log=lambda _: None)
        first_run = time.perf_counter() - start
        model = os.path.join(trained, "tokenizer.model")
        raw, prep = [], []
        for _ in range(args.repeats):  # alternated, so both see the same machine load
            raw.append(raw_encode_seconds(model, files, args.raw_threads))
            prep.append(prepare_seconds(args.corpus, os.path.join(tmp, "reuse"), model, workers))
        raw_s, prep_s = statistics.median(raw), statistics.median(prep)
        shapes = [("shakespeare_char baby", 12, 64, 12 * 64 / 0.0626),
                  ("batch 64 x seq 256", 64, 256, None)]
        loader = [(name, b, t, need, loader_tokens_per_second(trained, b, t, args.loader_steps,
                                                              prefetch=2))
                  for name, b, t, need in shapes]

    print(f"corpus: {len(files)} files, {megabytes:.1f} MB; SentencePiece "
          f"{meta['tokenizer']['vocab_size']} pieces; {workers} prepare workers; "
          f"medians of {args.repeats} alternated runs\n")
    print("| stage | seconds | MB/s | vs raw encoder |")
    print("|---|---|---|---|")
    print(f"| train tokenizer ({args.vocab_size} BPE) | {meta['seconds']['tokenizer']:.2f} | | |")
    print(f"| first prepare (check + train + encode + write) | {first_run:.2f} | "
          f"{megabytes / first_run:.2f} | |")
    print(f"| raw SentencePiece encode ({args.raw_threads} threads, in memory) | {raw_s:.2f} | "
          f"{megabytes / raw_s:.2f} | 1.00 |")
    print(f"| lmjax-prepare, reused model (read + encode + write) | {prep_s:.2f} | "
          f"{megabytes / prep_s:.2f} | {raw_s / prep_s:.2f} |")
    print(f"\nraw runs (s): {', '.join(f'{x:.2f}' for x in raw)}; "
          f"prepare runs (s): {', '.join(f'{x:.2f}' for x in prep)}\n")
    print("| loader shape | tokens/s | training consumes | ratio |")
    print("|---|---|---|---|")
    for name, b, t, need, got in loader:
        ratio = f"{got / need:.0f}x" if need else ""
        print(f"| {name} ({b} x {t}) | {got:,.0f} | {f'{need:,.0f}' if need else ''} | "
              f"{ratio} |")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.barh(["raw SentencePiece", "lmjax-prepare"], [megabytes / raw_s, megabytes / prep_s])
        ax.set_xlabel("MB/s (median)")
        ax.set_title(f"encode throughput, {megabytes:.0f} MB corpus")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
