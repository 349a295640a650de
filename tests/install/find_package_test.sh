#!/usr/bin/env bash
# Installs the built tree into a temp prefix, then configures, builds and runs a tiny outside
# project that does find_package(salad) and links salad::salad.
set -euo pipefail
build_dir=$1
consumer_src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >"$work/install.log"
test -f "$work/prefix/lib/cmake/salad/saladConfig.cmake" || {
  echo "saladConfig.cmake was not installed"; exit 1; }
# The consumer sees only the installed headers: the source tree must not leak in.
cmake -S "$consumer_src" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_BUILD_TYPE=Release >"$work/configure.log" || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" -j2 >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
out=$(LD_LIBRARY_PATH="$work/prefix/lib:${LD_LIBRARY_PATH:-}" "$work/build/consumer" "$work/x.safetensors")
echo "$out"
grep -q "consumer ok: 2 tensors, 6 parameters" <<<"$out"
