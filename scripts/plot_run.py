#!/usr/bin/env python3
"""Plot a salad run's metrics.jsonl as PNGs.

    scripts/plot_run.py RUN_DIR [--out DIR]

Reads RUN_DIR/metrics.jsonl (one JSON object per line: training lines, and validation lines with
"split": "valid"), skips malformed lines with a warning naming the line number, and writes into
DIR (default RUN_DIR/plots):

    loss.png        training loss, kl, nll vs step
    lr.png          learning rates (lr_adapter, lr_llm)
    grad_norm.png   gradient norm
    throughput.png  tokens/s (and MFU, when logged)
    data_wait.png   fraction of step time spent waiting for data
    valid.png       validation loss, misalignment M, forgetting F (and distillation, nll)

A figure whose keys never appear is not written. The files written are printed, one a line.
Needs python3 and matplotlib (Debian: python3-matplotlib); no display is used.
"""

import argparse
import json
import math
import os
import sys

try:
    import matplotlib
except ImportError:
    # A python3 earlier in PATH (pyenv, a venv) may lack the Debian package scripts/setup.sh
    # installs for the system interpreter: retry once with that one.
    system = "/usr/bin/python3"
    if (os.path.exists(system) and os.path.realpath(sys.executable) != os.path.realpath(system)
            and not os.environ.get("SALAD_PLOT_REEXEC")):
        os.environ["SALAD_PLOT_REEXEC"] = "1"
        os.execv(system, [system, os.path.abspath(__file__)] + sys.argv[1:])
    print("error: matplotlib is not installed for this python3 "
          "(Debian: apt-get install python3-matplotlib)", file=sys.stderr)
    sys.exit(1)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def warn(msg):
    print(f"warning: {msg}", file=sys.stderr)


def read_metrics(path):
    """Returns (train, valid): lists of dicts with an integer "step"."""
    train, valid = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as e:
                warn(f"{path}:{lineno}: skipping a malformed line ({e.msg})")
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("step"), (int, float)):
                warn(f"{path}:{lineno}: skipping a line without a numeric 'step'")
                continue
            (valid if rec.get("split") == "valid" else train).append(rec)
    return train, valid


def series(records, key):
    """(steps, values) of the records that have a finite number under `key`."""
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        xs.append(r["step"])
        ys.append(v)
    return xs, ys


def plot(out_dir, name, title, panels, records):
    """One PNG with one subplot per panel; a panel is (ylabel, [(key, label)], log_y).
    Returns the path written, or None when no key of any panel has data."""
    data = [[(label, *series(records, key)) for key, label in keys] for _, keys, _ in panels]
    keep = [(p, d) for p, d in zip(panels, data) if any(xs for _, xs, _ in d)]
    if not keep:
        return None
    fig, axes = plt.subplots(len(keep), 1, figsize=(8, 3.2 * len(keep)), sharex=True,
                             squeeze=False)
    for ax, ((ylabel, _, log_y), lines) in zip(axes[:, 0], keep):
        for label, xs, ys in lines:
            if xs:
                ax.plot(xs, ys, label=label, marker="o" if len(xs) < 30 else None,
                        markersize=3)
        ax.set_ylabel(ylabel)
        if log_y and all(y > 0 for _, _, ys in lines for y in ys):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description="Plot a salad run's metrics.jsonl as PNGs.")
    ap.add_argument("run_dir", help="run folder holding metrics.jsonl")
    ap.add_argument("--out", help="output folder (default: RUN_DIR/plots)")
    args = ap.parse_args(argv)

    metrics = os.path.join(args.run_dir, "metrics.jsonl")
    if not os.path.isfile(metrics):
        print(f"error: {metrics}: no such file (is {args.run_dir} a salad run folder?)",
              file=sys.stderr)
        return 1
    train, valid = read_metrics(metrics)
    if not train and not valid:
        print(f"error: {metrics}: no usable metrics lines", file=sys.stderr)
        return 1
    out_dir = args.out or os.path.join(args.run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)

    run = os.path.basename(os.path.normpath(args.run_dir))
    figures = [
        ("loss.png", f"{run}: training loss",
         [("loss (nats/token)", [("loss", "loss"), ("kl", "KL (distillation)"), ("nll", "NLL")],
           False)], train),
        ("lr.png", f"{run}: learning rate",
         [("learning rate", [("lr_adapter", "adapter"), ("lr_llm", "LLM")], True)], train),
        ("grad_norm.png", f"{run}: gradient norm",
         [("global grad norm", [("grad_norm", "grad norm")], True)], train),
        ("throughput.png", f"{run}: throughput",
         [("tokens / s", [("tokens_per_s", "tokens/s")], False),
          ("MFU", [("mfu", "MFU")], False)], train),
        ("data_wait.png", f"{run}: data wait",
         [("data wait (fraction of step)", [("data_wait", "data wait")], False)], train),
        ("valid.png", f"{run}: validation",
         [("loss (nats/token)", [("loss", "loss"), ("distillation", "distillation"),
                                 ("nll", "NLL")], False),
          ("misalignment M", [("misalignment", "M")], False),
          ("forgetting F", [("forgetting", "F")], False)], valid),
    ]
    written = []
    for name, title, panels, records in figures:
        path = plot(out_dir, name, title, panels, records)
        if path:
            written.append(path)
        else:
            warn(f"{name}: no data for it in {metrics}; not written")
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
