#!/usr/bin/env bash
# Peak tensor memory and time of the distillation loss, forward + backward, fp32, at Qwen's
# vocabulary (V = 151,936) and hidden width 2048: the naive full-logits version at N = 512, 1024
# and 1536 (extrapolated to 8192 by a linear fit), the chunked one at the same N and at N = 8192.
# Needs ~12 GB of free RAM (the naive run at N = 1536) and ~5 minutes on 2 cores. Extra
# arguments are passed on (e.g. --chunk 256, --naive-positions 512,1024,2048).
set -euo pipefail
cd "$(dirname "$0")/.."
b=${SALAD_BUILD_DIR:-build}/bench
[ -x "$b/salad_bench_loss" ] || { echo "build first: ninja -C ${SALAD_BUILD_DIR:-build} salad_bench_loss"; exit 1; }
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
"$b/salad_bench_loss" --vocab 151936 --hidden 2048 --positions 8192 \
  --naive-positions 512,1024,1536 --chunk 1024 --alpha 0.5 --temperature 1 "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
