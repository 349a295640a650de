#!/usr/bin/env bash
# Configures (first time) and builds salad into ${SALAD_BUILD_DIR:-build} with all cores.
# Extra arguments go to CMake's configure step, e.g. scripts/build.sh -DSALAD_BUILD_TESTS=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${SALAD_BUILD_DIR:-build}
gen=()
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null; then gen=(-G Ninja); fi
cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" "$@" >/dev/null
cmake --build "$build" -j "$(nproc)"
