#!/usr/bin/env bash
# Audio decode + resample throughput (FLAC 44.1 kHz stereo, WAV 16 kHz, Ogg Vorbis, MP3 -> 24 kHz
# mono) and FbankEncoder throughput on 1 and 2 threads, in seconds of audio per second. Prints
# the machine load first: the numbers mean little on a busy machine.
set -euo pipefail
cd "$(dirname "$0")/.."
b=${SALAD_BUILD_DIR:-build}/bench
[ -x "$b/salad_bench_audio" ] || { echo "build first: scripts/build.sh"; exit 1; }
echo "load: $(uptime)"
"$b/salad_bench_audio" --seconds "${SECONDS_PER_FILE:-60}" --reps "${REPS:-3}" --threads 1
"$b/salad_bench_audio" --seconds 10 --reps "${REPS:-3}" --threads 2 | tail -1
