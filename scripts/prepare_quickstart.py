#!/usr/bin/env python3
"""Text side of the quickstart: sentences of the State of the Union addresses
(assets/texts/sotu.txt, one address a line, in date order) split into what the quickstart needs.

    scripts/prepare_quickstart.py OUT_DIR [--text assets/texts/sotu.txt] [--seed 1234]

Writes into OUT_DIR (the last 20 addresses are held out from every training file):
  corpus.txt            training sentences, one a line (tokenizer, teacher, text replay)
  speech_texts.jsonl    {"id","text"}: the sentences to synthesize as the speech training set
  heldout_texts.jsonl   {"id","text"}: held-out sentences to synthesize for M and F
  bench_texts.jsonl     {"id","text"}: the benchmark contexts, to synthesize
  bench.jsonl           a sentence-completion benchmark: the first 60 % of the words of a held-out
                        sentence as the context, its true ending among 4 choices (the 3 others
                        are endings of other held-out sentences); "context_audio":
                        bench_audio/audio/<id>.wav
Standard library only.
"""
import argparse
import json
import os
import random
import re

SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def sentences(line):
    out = []
    for s in SPLIT.split(line.strip()):
        s = " ".join(s.split())
        n = len(s.split())
        if 6 <= n <= 28 and s.isascii() and s[-1] in ".!?":
            out.append(s)
        else:
            out.append(None)  # keeps positions, so "next sentence" stays the true next one
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--text", default=os.path.join(os.path.dirname(__file__), "..", "assets",
                                                    "texts", "sotu.txt"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--corpus", type=int, default=30000, help="training sentences")
    ap.add_argument("--speech", type=int, default=600, help="sentences to synthesize")
    ap.add_argument("--heldout", type=int, default=60)
    ap.add_argument("--bench", type=int, default=80)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with open(a.text, encoding="utf-8") as f:
        addresses = [l for l in f if l.strip()]
    rng = random.Random(a.seed)
    train = [s for l in addresses[:-20] for s in sentences(l) if s]
    test_addresses = [sentences(l) for l in addresses[-20:]]
    rng.shuffle(train)
    speech = train[:a.speech]
    corpus = train[a.speech:a.speech + a.corpus]
    with open(os.path.join(a.out, "corpus.txt"), "w") as f:
        f.write("\n".join(corpus) + "\n")
    with open(os.path.join(a.out, "speech_texts.jsonl"), "w") as f:
        for i, s in enumerate(speech):
            f.write(json.dumps({"id": f"s{i:05d}", "text": s}) + "\n")

    # Held-out sentences of 10+ words become benchmark items; the rest M/F data.
    pool = [s for sents in test_addresses for s in sents if s]
    rng.shuffle(pool)
    long = [s for s in pool if len(s.split()) >= 10]
    bench_sents = long[:a.bench]
    heldout = [s for s in pool if s not in set(bench_sents)][:a.heldout]
    with open(os.path.join(a.out, "heldout_texts.jsonl"), "w") as f:
        for i, s in enumerate(heldout):
            f.write(json.dumps({"id": f"h{i:04d}", "text": s}) + "\n")
    def split(s):
        w = s.split()
        k = round(0.6 * len(w))
        return " ".join(w[:k]), " ".join(w[k:])
    endings = [split(s)[1] for s in long[a.bench:a.bench + 10 * a.bench]]
    with open(os.path.join(a.out, "bench_texts.jsonl"), "w") as f, \
            open(os.path.join(a.out, "bench.jsonl"), "w") as g:
        for i, s in enumerate(bench_sents):
            ctx, end = split(s)
            choices = rng.sample(endings, 3)
            answer = rng.randrange(4)
            choices.insert(answer, end)
            item_id = f"b{i:04d}"
            f.write(json.dumps({"id": item_id, "text": ctx}) + "\n")
            g.write(json.dumps({"id": item_id, "context": ctx, "choices": choices,
                                "answer": answer,
                                "context_audio": f"bench_audio/audio/{item_id}.wav"}) + "\n")
    print(f"prepare_quickstart: {len(corpus)} training sentences, {len(speech)} to speak, "
          f"{len(heldout)} held out, {len(bench_sents)} benchmark items in {a.out}")


if __name__ == "__main__":
    main()
