#!/usr/bin/env python3
"""Checks scripts/prepare_mini_salad.py on small synthetic inputs in each source's format:
held-out and benchmark sentences never reach the training corpus, every benchmark item's answer
is its sentence's true ending and the distractors have as many words, the Bible's wrapped verses
are joined, and the Asterisk prompts skip tones, silences, missing files and prompts too long for a context,
and split train/held-out."""
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import unittest
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "scripts", "prepare_mini_salad.py")
WORDS = ("river stone market winter letter garden harbor window candle silver morning "
         "question answer village station engine library orchard meadow bridge").split()


def write_wav(path, seconds, rate=8000):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))


def sentences(tag, n, rng):
    """n distinct sentences of 6..10 words, capitalised, ending with a period."""
    out = []
    for i in range(n):
        k = rng.randint(6, 10)
        words = [f"{tag}{i}"] + [rng.choice(WORDS) for _ in range(k - 1)]
        out.append(" ".join(words).capitalize() + ".")
    return out


class PrepareMiniSalad(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rng = random.Random(7)
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        cls.src = {}
        # Brown: tagged tokens, one sentence a line; files c<genre><nn>
        brown = os.path.join(d, "brown")
        os.makedirs(brown)
        for code, genre in (("a", "news"), ("j", "learned"), ("k", "fiction"), ("d", "religion")):
            sents = sentences(genre, 60, rng)
            cls.src[genre] = sents
            with open(os.path.join(brown, f"c{code}01"), "w", encoding="latin-1") as f:
                for s in sents:
                    f.write(" ".join(f"{w}/nn" for w in s[:-1].split()) + " ./.\n")
        # Moby Dick: one JSON per chapter
        moby = os.path.join(d, "moby")
        os.makedirs(moby)
        cls.src["moby"] = sentences("whale", 60, rng)
        for c in range(2):
            with open(os.path.join(moby, f"chapter_{c + 1}.json"), "w") as f:
                json.dump({"text": " ".join(cls.src["moby"][30 * c:30 * c + 30])}, f)
        # SOTU: paragraphs of sentences
        cls.src["sotu"] = sentences("nation", 120, rng)
        with open(os.path.join(d, "sotu.txt"), "w") as f:
            for i in range(0, 120, 4):
                f.write(" ".join(cls.src["sotu"][i:i + 4]) + "\n")
        # `bible` output: a title line, verses that start with their number and wrap
        cls.src["bible"] = sentences("lord", 40, rng)
        with open(os.path.join(d, "kjv.txt"), "w") as f:
            f.write("\nGenesis 1\n\n")
            for i, v in enumerate(cls.src["bible"]):
                w = v.split()
                f.write(f"  {i + 1} " + " ".join(w[:4]) + "\n" + " ".join(w[4:]) + "\n")
        # Asterisk: `name: text` lines, a tone entry, a prompt without a wav
        audio = os.path.join(d, "asterisk")
        os.makedirs(os.path.join(audio, "digits"))
        lines = ["; Core Asterisk Sounds in English", "", "beep: [this is a simple beep tone]",
                 "silence/1: (1 second of silence)", "missing-file: This prompt has no recording.",
                 "too-long: A long menu of options."]
        os.makedirs(os.path.join(audio, "silence"))
        write_wav(os.path.join(audio, "silence", "1.wav"), 1.0)
        write_wav(os.path.join(audio, "too-long.wav"), 16.0)
        write_wav(os.path.join(audio, "beep.wav"), 0.5)
        cls.prompts = {}
        for i in range(12):
            name = f"digits/{i}" if i < 3 else f"prompt-{i}"
            text = f"Please enter your code number {i} followed by the pound key..."
            lines.append(f"{name}: {text}")
            write_wav(os.path.join(audio, name + ".wav"), 0.5 + i)
            cls.prompts[name] = text
        with gzip.open(os.path.join(d, "sounds.txt.gz"), "wt") as f:
            f.write("\n".join(lines) + "\n")
        cls.out = os.path.join(d, "out")
        subprocess.run([sys.executable, SCRIPT, cls.out, "--brown", brown, "--moby", moby,
                        "--sotu", os.path.join(d, "sotu.txt"), "--bible",
                        os.path.join(d, "kjv.txt"), "--asterisk-text",
                        os.path.join(d, "sounds.txt.gz"), "--asterisk-audio", audio,
                        "--bench", "10", "--heldout", "5", "--heldout-ivr", "3", "--speech", "10",
                        "--speech-espeak", "10"], check=True, capture_output=True)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def read_jsonl(self, name):
        with open(os.path.join(self.out, name)) as f:
            return [json.loads(line) for line in f]

    def test_no_held_out_sentence_in_the_training_text(self):
        with open(os.path.join(self.out, "corpus.txt")) as f:
            corpus = set(f.read().splitlines())
        held = set()
        for d in ("sotu", "news", "learned", "fiction", "moby", "bible"):
            for it in self.read_jsonl(f"bench_{d}.jsonl"):
                held.add(it["context"] + " " + it["choices"][it["answer"]])
            held.update(t["text"] for t in self.read_jsonl(f"heldout_{d}_texts.jsonl"))
        held.update(t["text"] for t in self.read_jsonl("heldout_sotu_espeak_texts.jsonl"))
        self.assertEqual(len(held), 6 * 10 + 6 * 5 + 5)
        self.assertEqual(held & corpus, set())
        speech = {t["text"] for f in ("speech_texts.jsonl", "speech_espeak_texts.jsonl")
                  for t in self.read_jsonl(f)}
        self.assertEqual(len(speech), 20)
        self.assertEqual(speech & held, set())
        self.assertTrue(speech <= set(self.src["sotu"]))
        with open(os.path.join(self.out, "sotu_replay.txt")) as f:
            self.assertEqual(set(f.read().splitlines()) & (held | speech), set())

    def test_benchmark_answers_are_true_endings_with_length_matched_distractors(self):
        with open(os.path.join(self.out, "corpus.txt")) as f:
            corpus = set(f.read().splitlines())
        for d in ("sotu", "news", "learned", "fiction", "moby", "bible"):
            # every ending offered is the ending of a sentence the teacher never trained on
            held = [s for s in self.src[d] if s not in corpus]
            held_endings = set()
            for s in held:
                w = s.split()
                held_endings.add(" ".join(w[round(0.6 * len(w)):]))
            items = self.read_jsonl(f"bench_{d}.jsonl")
            self.assertEqual(len(items), 10, d)
            answers = [it["answer"] for it in items]
            for it in items:
                self.assertEqual(len(it["choices"]), 4)
                true = it["context"] + " " + it["choices"][it["answer"]]
                self.assertIn(true, self.src[d], d)
                n = len(it["choices"][it["answer"]].split())
                for k, c in enumerate(it["choices"]):
                    self.assertIn(c, held_endings, (d, it))
                    if k != it["answer"]:
                        self.assertNotIn(it["context"] + " " + c, self.src[d])
                        self.assertLessEqual(abs(len(c.split()) - n), 1, (d, it))
                self.assertEqual(it["context_audio"], f"bench_audio/audio/{it['id']}.wav")
            self.assertGreater(len(set(answers)), 1, d)  # the answer's position varies

    def test_bible_verses_are_joined_across_lines(self):
        with open(os.path.join(self.out, "corpus.txt")) as f:
            corpus = set(f.read().splitlines())
        bible = set(self.src["bible"])
        held = {it["context"] + " " + it["choices"][it["answer"]]
                for it in self.read_jsonl("bench_bible.jsonl")}
        held |= {t["text"] for t in self.read_jsonl("heldout_bible_texts.jsonl")}
        self.assertEqual(bible - held, bible & corpus)
        self.assertEqual(len(bible & corpus), 40 - 15)

    def test_asterisk_prompts(self):
        train = self.read_jsonl("ivr_train.jsonl")
        held = self.read_jsonl("ivr_heldout.jsonl")
        self.assertEqual(len(held), 3)
        self.assertEqual(len(train) + len(held), 12)  # no tone, silence, missing or too long wav
        ids = [u["id"] for u in train + held]
        self.assertEqual(len(set(ids)), 12)
        self.assertIn("ivr-digits-0", ids)
        for u in train + held:
            self.assertTrue(os.path.isabs(u["audio"]) and os.path.exists(u["audio"]), u)
            self.assertNotIn("...", u["text"])
            self.assertTrue(u["text"].startswith("Please enter your code number"))
        with open(os.path.join(self.out, "corpus.txt")) as f:
            corpus = set(f.read().splitlines())
        self.assertTrue({u["text"] for u in train} <= corpus)
        with open(os.path.join(self.out, "domains.json")) as f:
            dom = json.load(f)
        self.assertEqual(dom["ivr_train"], 9)
        self.assertEqual(dom["bench_items"]["bible"], 10)


if __name__ == "__main__":
    unittest.main()
