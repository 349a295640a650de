#!/usr/bin/env python3
"""Tables of the miniature SALAD study (scripts/mini_salad.sh) from its salad-eval results, in the
layout of the paper's Tables 3-5 and Fig. 4, as Markdown on stdout.

    scripts/mini_results.py runs/mini > runs/mini/mini-results.md
"""
import json
import os
import sys

RUNS = [("stage1_a0", "Stage I, alpha 0 (NLL only)"), ("stage1_a05", "Stage I, alpha 0.5"),
        ("stage1_a1", "Stage I, alpha 1 (KL only)"),
        ("stage2_active", "Stage II from alpha 1, active (gamma 5)"),
        ("stage2_uniform", "Stage II from alpha 1, uniform (gamma 0)")]


def pct(x):
    return f"{100 * x:.1f}"


def main():
    out = sys.argv[1]
    res = {}
    for run, _ in RUNS:
        p = os.path.join(out, "eval", run, "results.json")
        if os.path.exists(p):
            with open(p) as f:
                res[run] = json.load(f)
    if not res:
        sys.exit("mini_results: no results under " + out)
    first = next(iter(res.values()))
    domains = [b["name"] for b in first["benchmarks"]]
    print("# Miniature SALAD: results\n")
    print(f"Produced by `scripts/mini_salad.sh` (outputs in `{out}`). Accuracy in %, sentence "
          "completion (chance 25%), `acc` of lm-eval's multiple choice; gap = teacher on text "
          "- model on speech (points); M and F in nats per position on held-out SOTU speech.\n")

    print("## Per domain (Table 3 / 5 layout): model on speech, acc / gap\n")
    print("| model | " + " | ".join(domains) + " | mean acc | mean gap | M | F |")
    print("|---|" + "---:|" * (len(domains) + 4))
    teacher = {b["name"]: b["modes"]["teacher_text"]["acc"] for b in first["benchmarks"]}
    print("| teacher on text | " + " | ".join(pct(teacher[d]) for d in domains) + " | " +
          pct(sum(teacher.values()) / len(teacher)) + " | – | – | – |")
    for run, label in RUNS:
        if run not in res:
            continue
        r = res[run]
        cells = []
        for b in r["benchmarks"]:
            cells.append(pct(b["modes"]["model_speech"]["acc"]) + " / " + pct(b["gap"]))
        h = r.get("heldout", {})
        print(f"| {label} | " + " | ".join(cells) + f" | {pct(r['mean_acc']['model_speech'])} | "
              f"{pct(r['mean_gap'])} | {h.get('misalignment', float('nan')):.4f} | "
              f"{h.get('forgetting', float('nan')):.4f} |")

    print("\n## The alpha sweep (Fig. 4 style)\n")
    print("| alpha | model on text (mean acc) | model on speech (mean acc) | mean gap | M | F |")
    print("|---:|---:|---:|---:|---:|---:|")
    for run, alpha in (("stage1_a0", "0"), ("stage1_a05", "0.5"), ("stage1_a1", "1")):
        if run in res:
            r = res[run]
            h = r.get("heldout", {})
            print(f"| {alpha} | {pct(r['mean_acc']['model_text'])} | "
                  f"{pct(r['mean_acc']['model_speech'])} | {pct(r['mean_gap'])} | "
                  f"{h.get('misalignment', float('nan')):.4f} | "
                  f"{h.get('forgetting', float('nan')):.4f} |")

    print("\n## Active vs uniform selection (Table 4 layout): model on speech, acc\n")
    print("| Stage II data selection | " + " | ".join(domains) + " | mean |")
    print("|---|" + "---:|" * (len(domains) + 1))
    for run, label in (("stage2_uniform", "uniform (gamma 0)"), ("stage2_active", "active (gamma 5)")):
        if run in res:
            r = res[run]
            print(f"| {label} | " + " | ".join(pct(b["modes"]["model_speech"]["acc"])
                                                  for b in r["benchmarks"]) +
                  f" | {pct(r['mean_acc']['model_speech'])} |")

    # What each selection picked, by source domain of the texts.
    broad = {}
    bp = os.path.join(out, "data", "broad.jsonl")
    if os.path.exists(bp):
        with open(bp) as f:
            for line in f:
                j = json.loads(line)
                broad[j["text"]] = j["source"]
    rows = []
    for run in ("stage2_uniform", "stage2_active"):
        mp = os.path.join(out, run, "selection", "selected", "manifest.jsonl")
        if not os.path.exists(mp):
            continue
        share, total = {}, 0.0
        with open(mp) as f:
            for line in f:
                try:
                    j = json.loads(line)
                except ValueError:
                    continue
                src = broad.get(j["text"], "?")
                share[src] = share.get(src, 0.0) + j.get("duration", 0.0)
                total += j.get("duration", 0.0)
        rows.append((run, share, total))
    if rows:
        srcs = sorted({s for _, sh, _ in rows for s in sh})
        print("\n## What the selections synthesized: share of the selected audio by source\n")
        print("| selection | hours | " + " | ".join(srcs) + " |")
        print("|---|---:|" + "---:|" * len(srcs))
        for run, sh, total in rows:
            print(f"| {run} | {total / 3600:.3f} | " +
                  " | ".join(f"{100 * sh.get(s, 0) / max(total, 1e-9):.0f}%" for s in srcs) + " |")


if __name__ == "__main__":
    main()
