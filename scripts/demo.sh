#!/usr/bin/env bash
# The demo: sets up, builds, then shows the bundled model (data/tiny-llama, a small LLaMA
# trained on the King James Bible) and evaluates its perplexity on held-out chapters.
# (The training issue turns this into a fine-tuning demo.)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/setup.sh
echo "== building qlora-train"
scripts/build.sh qlora-train
echo
echo "== qlora-train inspect --config configs/tiny/eval.json"
build/qlora-train inspect --config configs/tiny/eval.json
echo
echo "== qlora-train eval --config configs/tiny/eval.json"
build/qlora-train eval --config configs/tiny/eval.json
