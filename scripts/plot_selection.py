#!/usr/bin/env python3
"""Bar chart of a Stage II selection: per cluster P_web, M(c) and P_target (and the share of the
selected audio), from the report.json that salad-select / salad-train stage 2 write.

    scripts/plot_selection.py SELECTION/report.json [--out SELECTION/report.png]
"""
import argparse
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    with open(a.report) as f:
        r = json.load(f)
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(a.report)), "report.png")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cl = r["clusters"]
    if not cl:
        sys.exit("plot_selection: no clusters in " + a.report)
    order = sorted(range(len(cl)), key=lambda i: -cl[i]["weight"])
    x = list(range(len(order)))
    total = sum(c["drawn_seconds"] for c in cl) or 1.0
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, 0.12 * len(cl) + 4), 7), sharex=True)
    w = 0.4
    ax1.bar([i - w / 2 for i in x], [cl[i]["p_web"] for i in order], w, label="P_web(c)")
    ax1.bar([i + w / 2 for i in x], [cl[i]["weight"] for i in order], w, label="P_target(c)")
    ax1.plot(x, [cl[i]["drawn_seconds"] / total for i in order], "k.", ms=4,
             label="share of selected audio")
    ax1.set_ylabel("probability")
    ax1.legend()
    ax1.set_title(f"Stage II selection: gamma {r['gamma']:g}, {r['selected_seconds'] / 3600:.3f} h "
                  f"selected of a {r['budget_seconds'] / 3600:.3f} h budget, "
                  f"{r['corpus_texts']} corpus texts")
    ax2.bar(x, [cl[i]["m"] for i in order],
            color=["C2" if cl[i]["m_measured"] else "0.6" for i in order])
    ax2.set_ylabel("M(c), nats (grey: estimated)")
    ax2.set_xlabel("cluster, by P_target")
    if len(order) <= 40:
        ax2.set_xticks(x)
        ax2.set_xticklabels([str(i) for i in order], rotation=90, fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
