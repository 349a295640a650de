#!/usr/bin/env python3
"""Bar chart of a salad-eval results.json: accuracy per benchmark in each mode (teacher on text,
model on text, model on speech) and the gap, next to results.json as results.png.

    scripts/plot_eval.py EVAL/results.json [--out EVAL/results.png]
"""
import argparse
import json
import os


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    with open(a.results) as f:
        r = json.load(f)
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(a.results)), "results.png")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = r["benchmarks"]
    names = [b["name"] for b in benches] + ["mean"]
    modes = ["teacher_text", "model_text", "model_speech"]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names) + 2), 4))
    w = 0.8 / len(modes)
    for k, m in enumerate(modes):
        ys = [100 * b["modes"][m]["acc"] if m in b["modes"] else 0 for b in benches]
        ys.append(100 * r.get("mean_acc", {}).get(m, 0))
        ax.bar([i + (k - 1) * w for i in range(len(names))], ys, w, label=m.replace("_", " "))
    for i, b in enumerate(benches):
        if "model_speech" in b["modes"] and "teacher_text" in b["modes"]:
            ax.annotate(f"gap {100 * b['gap']:.1f}", (i, 100 * b["modes"]["teacher_text"]["acc"]),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title(os.path.basename(r["checkpoint"].rstrip("/")))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
