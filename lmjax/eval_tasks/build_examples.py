"""Writes the shipped example JSONL files (data/*.jsonl) from one public-domain book.

  python -m lmjax.eval_tasks.build_examples --book=the_time_machine.txt [--out=DIR]

The shipped files come from Project Gutenberg ebook #35, H. G. Wells' The Time Machine (public
domain), with --seed=0. Paragraphs are blank-line separated; their whitespace is collapsed.
  cloze_time_machine.jsonl      {"text"}: a passage whose last word is the target (LAMBADA's
                                format)
  choice_time_machine.jsonl     {"id", "question", "choices": {"text", "label"}, "answerKey"}:
                                which of four sentences follows (ARC's format, HellaSwag's idea)
  rolling_time_machine.jsonl    {"text"}: whole paragraphs for perplexity
  arithmetic.jsonl              {"question", "answer"}: "17 + 25 =" -> "42", made from the seed
  cloze_shakespeare.jsonl       {"text"}: speeches from the last tenth of lmjax/data's Tiny
                                Shakespeare (the part lmjax-prepare holds out for eval), in its
                                own characters, so character-level models can score them
"""
import argparse
import json
import os
import random
import re

from lmjax.eval_tasks.jsonl import HERE

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z“_])")


def paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def cloze(paras, rng, count=40):
    out = []
    for p in paras:
        words = p.split(" ")
        if not 25 <= len(words) <= 90:
            continue
        last = words[-1].strip(".,;:!?”’\"'—_)")
        if last.isalpha() and len(last) > 2:
            out.append({"text": " ".join(words[:-1] + [last])})
    rng.shuffle(out)
    return out[:count]


def choice(paras, rng, count=40):
    sentences = [s for p in paras for s in SENTENCE_END.split(p) if 6 <= len(s.split()) <= 30]
    pairs = [(a, b) for p in paras for a, b in zip(SENTENCE_END.split(p),
                                                   SENTENCE_END.split(p)[1:])
             if 6 <= len(a.split()) <= 40 and 6 <= len(b.split()) <= 30]
    rng.shuffle(pairs)
    out = []
    for i, (context, follows) in enumerate(pairs[:count]):
        options = [follows] + rng.sample([s for s in sentences if s != follows], 3)
        rng.shuffle(options)
        labels = ["A", "B", "C", "D"]
        out.append({"id": f"time_machine_{i}", "question": context,
                    "choices": {"text": options, "label": labels},
                    "answerKey": labels[options.index(follows)]})
    return out


def rolling(paras, rng, count=20):
    out = [{"text": p} for p in paras if 60 <= len(p.split()) <= 160]
    rng.shuffle(out)
    return out[:count]


def arithmetic(rng, count=40):
    out = []
    for _ in range(count):
        a, b = rng.randint(1, 49), rng.randint(1, 49)
        out.append({"question": f"{a} + {b} =", "answer": str(a + b)})
    return out


def shakespeare_paragraphs(text: str) -> list[str]:
    held_out = text[int(len(text) * 0.9):]
    return [" ".join(p.split()) for p in held_out.split("\n\n")[1:] if p.strip()]


def write(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{path}: {len(rows)} examples")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", required=True, help="a UTF-8 plain-text book")
    parser.add_argument("--out", default=os.path.join(HERE, "data"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with open(args.book, encoding="utf-8") as f:
        paras = paragraphs(f.read())
    os.makedirs(args.out, exist_ok=True)
    write(os.path.join(args.out, "cloze_time_machine.jsonl"), cloze(paras, random.Random(args.seed)))
    write(os.path.join(args.out, "choice_time_machine.jsonl"),
          choice(paras, random.Random(args.seed)))
    write(os.path.join(args.out, "rolling_time_machine.jsonl"),
          rolling(paras, random.Random(args.seed)))
    write(os.path.join(args.out, "arithmetic.jsonl"), arithmetic(random.Random(args.seed)))
    with open(os.path.join(os.path.dirname(HERE), "data", "tinyshakespeare.txt"),
              encoding="utf-8") as f:
        speeches = shakespeare_paragraphs(f.read())
    write(os.path.join(args.out, "cloze_shakespeare.jsonl"),
          cloze(speeches, random.Random(args.seed)))


if __name__ == "__main__":
    main()
