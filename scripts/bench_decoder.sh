#!/usr/bin/env bash
# Qwen2 decoder forward throughput at the "mid" and Qwen2.5-0.5B shapes, 1 and 2 threads,
# after the fp32 GEMM peak of this machine (scripts/bench_gemm.sh has more).
set -euo pipefail
cd "$(dirname "$0")/.."
b=${SALAD_BUILD_DIR:-build}/bench
[ -x "$b/salad_bench_decoder" ] || { echo "build first: scripts/build.sh"; exit 1; }
"$b/salad_bench_gemm" | head -4
for threads in 1 2; do
  for preset in mid 0.5b; do
    "$b/salad_bench_decoder" --preset "$preset" --tokens 512 --threads "$threads" | tail -3
  done
done
