#!/usr/bin/env bash
# The quickstart (README's first command runs it after setup and build).
#
# What runs today: the resolved quickstart recipe, and a look at a real Hugging Face-layout
# checkpoint. The end-to-end miniature job (prepare data, train a tiny teacher, Stage I,
# evaluate) needs the trainer and lands with issues #6 and #9.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SALAD_BUILD_DIR:-build}/apps
[ -x "$bin/salad-train" ] || { echo "build first: scripts/build.sh"; exit 1; }

echo "== the quickstart recipe, resolved (configs/quickstart.yaml; every key: docs/config.md)"
"$bin/salad-train" --config configs/quickstart.yaml --dump-config

echo "== a Hugging Face Qwen2 checkpoint (sharded), as salad reads it"
"$bin/salad-inspect" tests/data/qwen2/qwen2_tiny_untied

echo
echo "quickstart: the training steps of this job arrive with the trainer (issue #6) and the"
echo "miniature reproduction (issue #9); nothing was trained."
