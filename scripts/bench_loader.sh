#!/usr/bin/env bash
# Data loader throughput (1 and 2 workers, context 2048, Qwen tokenizer, features from a cache)
# and the data-wait share of a small speech-LM training step on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
b=${SALAD_BUILD_DIR:-build}/bench
[ -x "$b/salad_bench_loader" ] || { echo "build first: scripts/build.sh"; exit 1; }
for workers in 1 2; do
  "$b/salad_bench_loader" --workers "$workers" --batches 300
done
"$b/salad_bench_loader" --workers 2 --batches 5 --train-steps 6
