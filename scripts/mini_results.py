#!/usr/bin/env python3
"""Tables and plots of the miniature SALAD study (scripts/mini_salad.sh) from its salad-eval
results, in the layout of the paper's Tables 3-5 and Figs. 4 and 6: Markdown on stdout, PNGs into
PLOTS (when matplotlib is installed).

    scripts/mini_results.py runs/mini [--plots runs/mini/plots] > runs/mini/mini-results.md
"""
import argparse
import json
import math
import os
import sys

RUNS = [("stage1_a0", "Stage I, alpha 0 (NLL only)"), ("stage1_a05", "Stage I, alpha 0.5"),
        ("stage1_a1", "Stage I, alpha 1 (KL only)"),
        ("stage2_uniform", "Stage II from alpha 1, uniform (gamma 0)"),
        ("stage2_active", "Stage II from alpha 1, active (gamma 5)")]
ALPHAS = [("stage1_a0", 0.0), ("stage1_a05", 0.5), ("stage1_a1", 1.0)]
NAN = float("nan")


def pct(x):
    return f"{100 * x:.1f}"


def items_of(r, mode):
    """{(benchmark, item id): correct} of one mode."""
    out = {}
    for b in r["benchmarks"]:
        for it in b["modes"].get(mode, {}).get("items", []):
            out[(b["name"], it["id"])] = it["pred"] == it["answer"]
    return out


def mean_se(r, mode):
    """Mean accuracy over all items of all benchmarks, and its standard error."""
    v = list(items_of(r, mode).values())
    if not v:
        return NAN, NAN
    p = sum(v) / len(v)
    return p, math.sqrt(p * (1 - p) / len(v))


def sign_test(a, b):
    """Paired comparison of two runs on the same items: (a right and b wrong, the reverse, the
    two-sided exact sign-test p-value)."""
    keys = a.keys() & b.keys()
    n_ab = sum(1 for k in keys if a[k] and not b[k])
    n_ba = sum(1 for k in keys if b[k] and not a[k])
    n = n_ab + n_ba
    if n == 0:
        return n_ab, n_ba, 1.0
    k = min(n_ab, n_ba)
    p = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return n_ab, n_ba, min(1.0, 2 * p)


def heldout_sets(r):
    return {h["name"]: h for h in r.get("heldout_sets", [])}


def jsonl(path):
    """The parsed lines of a JSONL file (a torn line is left out); [] when it does not exist."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def selection_shares(out):
    """[(run, {source: seconds}, total seconds)] of what each Stage II selection synthesized."""
    broad = {j["text"]: j["source"] for j in jsonl(os.path.join(out, "data", "broad.jsonl"))}
    rows = []
    for run in ("stage2_uniform", "stage2_active"):
        mp = os.path.join(out, run, "selection", "selected", "manifest.jsonl")
        if not os.path.exists(mp):
            continue
        share, total = {}, 0.0
        for j in jsonl(mp):
            src = broad.get(j["text"], "?")
            share[src] = share.get(src, 0.0) + j.get("duration", 0.0)
            total += j.get("duration", 0.0)
        rows.append((run, share, total))
    return rows


def curves(out, run):
    """[(training tokens, M, F)] of a run's validation lines (metrics.jsonl)."""
    tokens, pts = 0, []
    for j in jsonl(os.path.join(out, run, "metrics.jsonl")):
        if j.get("split") == "valid":
            pts.append((tokens, j["misalignment"], j["forgetting"]))
        else:
            tokens += j.get("tokens", 0)
    return pts


def grouped_bars(ax, groups, series, rotation=0):
    """One bar per (series, group), the series side by side within each group."""
    w = 0.8 / len(series)
    for k, (label, values) in enumerate(series):
        ax.bar([i + k * w for i in range(len(groups))], values, w, label=label)
    ax.set_xticks([i + w * (len(series) - 1) / 2 for i in range(len(groups))], groups,
                  rotation=rotation, ha="right" if rotation else "center")
    ax.legend(fontsize=8)


def save(fig, d, name, written):
    import matplotlib.pyplot as plt
    fig.tight_layout()
    p = os.path.join(d, name)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)


def plots(res, sets, shares, d, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("mini_results: no plots (python3-matplotlib missing)", file=sys.stderr)
        return []
    os.makedirs(d, exist_ok=True)
    written = []
    # Fig. 4 style: the alpha sweep.
    al = [(a, res[r]) for r, a in ALPHAS if r in res]
    if al:
        fig, ax = plt.subplots(1, 3, figsize=(12, 3.4))
        xs = [a for a, _ in al]
        for mode, label in (("model_text", "model on text"), ("model_speech", "model on speech")):
            ms = [mean_se(r, mode) for _, r in al]
            ax[0].errorbar(xs, [100 * m for m, _ in ms], yerr=[100 * s for _, s in ms],
                           marker="o", capsize=3, label=label)
        t = mean_se(al[0][1], "teacher_text")[0]
        ax[0].axhline(100 * t, color="gray", ls="--", label="teacher on text")
        ax[0].axhline(25, color="lightgray", ls=":", label="chance")
        ax[0].set(xlabel="alpha", ylabel="mean acc (%)", title="accuracy (±1 s.e.)")
        ax[0].legend(fontsize=7)
        for i, (key, title) in enumerate((("misalignment", "M (nats)"),
                                          ("forgetting", "F (nats)")), start=1):
            for name in sets:
                ax[i].plot(xs, [heldout_sets(r).get(name, {}).get(key, NAN) for _, r in al],
                           marker="o", label=name)
            ax[i].set(xlabel="alpha", title=title)
        if sets:
            ax[2].legend(fontsize=7)
        save(fig, d, "alpha_sweep.png", written)
    # Fig. 4 style: M and F of the held-out SOTU speech against training tokens, per alpha.
    cs = [(a, curves(out, r)) for r, a in ALPHAS]
    if any(c for _, c in cs):
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
        for a, c in cs:
            if c:
                ax[0].plot([t / 1e6 for t, _, _ in c], [m for _, m, _ in c], marker="o",
                           label=f"alpha {a:g}")
                ax[1].plot([t / 1e6 for t, _, _ in c], [x for _, _, x in c], marker="o",
                           label=f"alpha {a:g}")
        ax[0].set(xlabel="Stage I training tokens (M)", ylabel="nats", title="misalignment M")
        ax[1].set(xlabel="Stage I training tokens (M)", title="forgetting F")
        ax[0].legend(fontsize=8)
        save(fig, d, "alpha_curves.png", written)
    # Fig. 6 style: M per held-out set before and after Stage II.
    runs = [(r, lbl) for r, lbl in (("stage1_a1", "Stage I (alpha 1)"),
                                    ("stage2_uniform", "Stage II uniform"),
                                    ("stage2_active", "Stage II active")) if r in res]
    if runs and sets:
        series = [(lbl, [heldout_sets(res[r]).get(s, {}).get("misalignment", NAN) for s in sets])
                  for r, lbl in runs]
        fig, ax = plt.subplots(figsize=(10, 3.6))
        grouped_bars(ax, sets, series)
        ax.set(ylabel="M (nats per position)", title="misalignment per held-out set")
        save(fig, d, "stage2_misalignment.png", written)
    if shares:
        srcs = sorted({s for _, sh, _ in shares for s in sh})
        series = [(run, [100 * sh.get(s, 0) / max(total, 1e-9) for s in srcs])
                  for run, sh, total in shares]
        fig, ax = plt.subplots(figsize=(10, 3.4))
        grouped_bars(ax, srcs, series, rotation=45)
        ax.set(ylabel="% of the selected audio", title="what each Stage II selection synthesized")
        save(fig, d, "selection_shares.png", written)
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--plots", help="folder for the PNGs (default: OUT/plots)")
    args = ap.parse_args()
    out = args.out
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
    n_items = {b["name"]: b["modes"]["teacher_text"]["scored"] for b in first["benchmarks"]}
    sets = [h["name"] for h in first.get("heldout_sets", [])]
    print("# Miniature SALAD: results\n")
    print(f"Produced by `scripts/mini_salad.sh` (outputs in `{out}`). Accuracy in %, sentence "
          "completion (chance 25%; items per domain: " +
          ", ".join(f"{d} {n_items[d]}" for d in domains) + "), `acc` of lm-eval's multiple "
          "choice; gap = teacher on text - model on speech (points); M and F in nats per "
          "position on held-out speech; s.e. = standard error of a mean accuracy over all "
          "items.\n")

    print("## Per domain (Table 3 / 5 layout): acc / gap\n")
    print("| model | " + " | ".join(domains) + " | mean acc (s.e.) | mean gap | M | F |")
    print("|---|" + "---:|" * (len(domains) + 4))
    teacher = {b["name"]: b["modes"]["teacher_text"]["acc"] for b in first["benchmarks"]}
    tm, ts = mean_se(first, "teacher_text")
    print("| teacher on text | " + " | ".join(pct(teacher[d]) for d in domains) +
          f" | {pct(tm)} ({pct(ts)}) | – | – | – |")
    for mode, what in (("model_text", "on text"), ("model_speech", "on speech")):
        for run, label in RUNS:
            if run not in res:
                continue
            r = res[run]
            cells = []
            for b in r["benchmarks"]:
                t = b["modes"]["teacher_text"]["acc"]
                cells.append(pct(b["modes"][mode]["acc"]) + " / " +
                             pct(t - b["modes"][mode]["acc"]))
            m, se = mean_se(r, mode)
            h = r.get("heldout", {})
            print(f"| {label}, {what} | " + " | ".join(cells) + f" | {pct(m)} ({pct(se)}) | "
                  f"{pct(tm - m)} | {h.get('misalignment', NAN):.4f} | "
                  f"{h.get('forgetting', NAN):.4f} |")

    if sets:
        print("\n## M and F per held-out set (nats per position)\n")
        print("Each set is measured on its own. `sotu`..`bible`: Flite voices; `sotu_espeak`: the "
              "espeak-ng voices; `ivr_human`: held-out Asterisk prompts (real speech). Only SOTU "
              "and the IVR prompts are in the Stage I speech.\n")
        print("| model | " + " | ".join(f"M {s}" for s in sets) + " | " +
              " | ".join(f"F {s}" for s in sets) + " |")
        print("|---|" + "---:|" * (2 * len(sets)))
        for run, label in RUNS:
            if run not in res:
                continue
            hs = heldout_sets(res[run])
            print(f"| {label} | " +
                  " | ".join(f"{hs.get(s, {}).get('misalignment', NAN):.4f}" for s in sets) +
                  " | " +
                  " | ".join(f"{hs.get(s, {}).get('forgetting', NAN):.4f}" for s in sets) + " |")

    print("\n## The alpha sweep (Fig. 4 layout)\n")
    print("| alpha | model on text: mean acc (s.e.) | model on speech: mean acc (s.e.) | "
          "mean gap | M (all sets) | F (all sets) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for run, alpha in ALPHAS:
        if run in res:
            r = res[run]
            h = r.get("heldout", {})
            mt, st = mean_se(r, "model_text")
            ms, ss = mean_se(r, "model_speech")
            print(f"| {alpha:g} | {pct(mt)} ({pct(st)}) | {pct(ms)} ({pct(ss)}) | "
                  f"{pct(tm - ms)} | {h.get('misalignment', NAN):.4f} | "
                  f"{h.get('forgetting', NAN):.4f} |")

    cs = [(a, curves(out, r)) for r, a in ALPHAS]
    if any(len(c) > 1 for _, c in cs):
        print("\nDuring Stage I (validation on the held-out SOTU speech, Flite voices): M / F at "
              "each validation.\n")
        n = max(len(c) for _, c in cs)
        longest = max(cs, key=lambda x: len(x[1]))[1]
        print("| alpha | " + " | ".join(f"{t / 1e6:.2f} M tok" for t, _, _ in longest) + " |")
        print("|---:|" + "---:|" * n)
        for a, c in cs:
            if c:
                print(f"| {a:g} | " + " | ".join(f"{m:.4f} / {x:.4f}" for _, m, x in c) + " |")

    print("\n## Active vs uniform selection (Table 4 layout): model on speech, acc\n")
    print("| Stage II data selection | " + " | ".join(domains) + " | mean (s.e.) |")
    print("|---|" + "---:|" * (len(domains) + 1))
    for run, label in (("stage1_a1", "none (Stage I, alpha 1)"),
                       ("stage2_uniform", "uniform (gamma 0)"),
                       ("stage2_active", "active (gamma 5)")):
        if run in res:
            r = res[run]
            m, se = mean_se(r, "model_speech")
            print(f"| {label} | " + " | ".join(pct(b["modes"]["model_speech"]["acc"])
                                                  for b in r["benchmarks"]) +
                  f" | {pct(m)} ({pct(se)}) |")
    pairs = [("stage2_active", "stage2_uniform"), ("stage2_active", "stage1_a1"),
             ("stage2_uniform", "stage1_a1"), ("stage1_a1", "stage1_a0")]
    lines = []
    for x, y in pairs:
        if x in res and y in res:
            nxy, nyx, p = sign_test(items_of(res[x], "model_speech"),
                                    items_of(res[y], "model_speech"))
            lines.append(f"| {x} vs {y} | {nxy} | {nyx} | {p:.3f} |")
    if lines:
        print("\nPaired on the same items (model on speech): items only the first gets right, "
              "only the second, and the two-sided sign-test p-value.\n")
        print("| comparison | first only | second only | p |")
        print("|---|---:|---:|---:|")
        print("\n".join(lines))

    shares = selection_shares(out)
    if shares:
        srcs = sorted({s for _, sh, _ in shares for s in sh})
        print("\n## What the selections synthesized: share of the selected audio by source\n")
        print("| selection | hours | " + " | ".join(srcs) + " |")
        print("|---|---:|" + "---:|" * len(srcs))
        for run, sh, total in shares:
            print(f"| {run} | {total / 3600:.3f} | " +
                  " | ".join(f"{100 * sh.get(s, 0) / max(total, 1e-9):.0f}%" for s in srcs) + " |")

    written = plots(res, sets, shares, args.plots or os.path.join(out, "plots"), out)
    if written:
        print("\nPlots: " + ", ".join(f"`{p}`" for p in written))


if __name__ == "__main__":
    main()
