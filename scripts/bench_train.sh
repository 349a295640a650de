#!/usr/bin/env bash
# Training-step throughput (issue #6): salad's Trainer::step against the same model, loss and
# AdamW step written in plain PyTorch (scripts/bench_train_reference.py, Debian's python3-torch
# 1.13 on the same LibTorch and OpenBLAS), on the same packed batches and initial weights, with
# the same thread count. Prints tokens/s, MFU and peak RSS of both, their per-step loss and
# gradient-norm agreement, and the salad / PyTorch tokens/s ratio.
#
#   SALAD_BUILD_DIR=build scripts/bench_train.sh
#   PRESETS="tiny mid" THREADS="2 1" WARMUP=2 STEPS=6 PROFILE=0 scripts/bench_train.sh
#
# PROFILE=1 adds a phase breakdown of both steps (forward, loss, backward, optimizer). Needs
# ~4 GB of free RAM (the PyTorch side holds full [N, V] logits) and ~5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
b=${SALAD_BUILD_DIR:-build}/bench
[ -x "$b/salad_bench_train" ] || {
  echo "build first: ninja -C ${SALAD_BUILD_DIR:-build} salad_bench_train"
  exit 1
}
py=/usr/bin/python3  # Debian's interpreter: python3-torch lives in its dist-packages
if ! "$py" -c 'import torch' 2>/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "bench_train: installing python3-torch (the PyTorch reference)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-torch
fi

presets=${PRESETS:-"tiny mid"}
thread_counts=${THREADS:-2}
warmup=${WARMUP:-2}
steps=${STEPS:-6}
profile=${PROFILE:-0}
work=$(mktemp -d "${TMPDIR:-/tmp}/salad_bench_train.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "$(uname -srm); $(nproc) cores; $("$py" -c 'import torch; print("python3-torch", torch.__version__)')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for preset in $presets; do
  for t in $thread_counts; do
    dir=$work/$preset-$t
    echo
    echo "=== $preset, $t thread(s): salad (load $(cut -d' ' -f1-3 /proc/loadavg)) ==="
    OMP_NUM_THREADS=$t "$b/salad_bench_train" --preset "$preset" --threads "$t" \
      --warmup "$warmup" --steps "$steps" --dump "$dir" --profile "$profile"
    echo
    echo "=== $preset, $t thread(s): PyTorch reference (load $(cut -d' ' -f1-3 /proc/loadavg)) ==="
    OMP_NUM_THREADS=$t "$py" scripts/bench_train_reference.py --data "$dir" --threads "$t" \
      --profile "$profile"
    rm -rf "$dir"
  done
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
