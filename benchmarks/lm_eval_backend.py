"""lm-eval requests/s: the `lmjax` backend vs lm-eval's own HF backend (torch), same CPU.

  python benchmarks/lm_eval_backend.py [--kind=gpt2 --width=256 --layers=4 --context=256
                                        --batch_size=16 --repeats=3]

One model, built offline from a transformers config (perturbed random weights) and saved as an
HF directory, is loaded by both backends. Requests: every (question, choice) pair of the shipped
lmjax_choice examples (loglikelihood, 160 requests) and the lmjax_arithmetic prompts generated
greedily until a newline or 32 tokens (generate_until, 40 requests). One warm-up pass each
(compilation for lmjax), then the median of --repeats timed passes. Prints requests/s per backend
and kind, the lmjax/hf ratio, and how far the answers differ: the largest |difference| of a
loglikelihood and whether every is_greedy flag agrees, or how many generations are identical.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def requests():
    from lm_eval.api.instance import Instance
    data = os.path.join(REPO, "lmjax", "eval_tasks", "data")
    loglikelihood, generate = [], []
    for line in open(os.path.join(data, "choice_time_machine.jsonl"), encoding="utf-8"):
        doc = json.loads(line)
        for choice in doc["choices"]["text"]:
            loglikelihood.append(Instance("loglikelihood", doc, (doc["question"], " " + choice),
                                          len(loglikelihood)))
    gen_kwargs = {"until": ["\n"], "max_gen_toks": 32, "do_sample": False}
    for line in open(os.path.join(data, "arithmetic.jsonl"), encoding="utf-8"):
        doc = json.loads(line)
        generate.append(Instance("generate_until", doc, (doc["question"], dict(gen_kwargs)),
                                 len(generate)))
    return {"loglikelihood": loglikelihood, "generate_until": generate}


def timed(lm, kind, reqs, repeats):
    run = getattr(lm, kind)
    answers = run(reqs, disable_tqdm=True)  # warm-up: compiles every shape lmjax needs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(reqs, disable_tqdm=True)
        times.append(time.perf_counter() - start)
    return len(reqs) / statistics.median(times), answers


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kind", default="gpt2", choices=("gpt2", "llama"))
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import pathlib
    import jax
    import torch
    from tests.lm_eval_helpers import build_hf_dir, hf_lm, lmjax_lm
    directory = build_hf_dir(pathlib.Path(tempfile.mkdtemp()) / "model", args.kind,
                             args.context, width=args.width, layers=args.layers)
    reqs = requests()
    backends = {"hf": hf_lm(directory, batch_size=args.batch_size),
                "lmjax": lmjax_lm(directory, batch_size=args.batch_size)}
    print(f"{args.kind} d_model={args.width} layers={args.layers} context={args.context}, "
          f"batch {args.batch_size}, {os.cpu_count()} CPUs, torch {torch.get_num_threads()} "
          f"threads, jax {jax.devices()[0].platform} x{jax.device_count()}; median of "
          f"{args.repeats}")
    print(f"{'kind':<16} {'requests':>8} {'hf req/s':>10} {'lmjax req/s':>12} {'lmjax/hf':>9}"
          f"  answers")
    for kind, batch in reqs.items():
        rate_hf, answers_hf = timed(backends["hf"], kind, batch, args.repeats)
        rate_ours, answers_ours = timed(backends["lmjax"], kind, batch, args.repeats)
        if kind == "loglikelihood":
            worst = max(abs(a[0] - b[0]) for a, b in zip(answers_ours, answers_hf))
            flags = all(a[1] == b[1] for a, b in zip(answers_ours, answers_hf))
            same = f"max |d logL| {worst:.1e}, is_greedy {'same' if flags else 'DIFFERS'}"
        else:
            same = f"{sum(a == b for a, b in zip(answers_ours, answers_hf))}/{len(batch)} identical"
        print(f"{kind:<16} {len(batch):>8} {rate_hf:>10.1f} {rate_ours:>12.1f} "
              f"{rate_ours / rate_hf:>9.2f}  {same}")


if __name__ == "__main__":
    main()
