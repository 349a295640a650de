#!/usr/bin/env bash
# Mimi encoder throughput (seconds of audio per second) at the released model's full size (random
# weights), 10 s and 60 s clips, latent and codes (all 32 codebooks), 1 and 2 threads.
set -euo pipefail
cd "$(dirname "$0")/.."
b=${SALAD_BUILD_DIR:-build}/bench
[ -x "$b/salad_bench_mimi" ] || { echo "build first: ninja -C ${SALAD_BUILD_DIR:-build} salad_bench_mimi"; exit 1; }
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
for threads in 1 2; do
  for seconds in 10 60; do
    reps=3
    [ "$seconds" -ge 60 ] && reps=2
    for output in latent codes; do
      "$b/salad_bench_mimi" --seconds "$seconds" --threads "$threads" --output "$output" --n-q 32 \
        --reps "$reps" | tail -2
    done
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
