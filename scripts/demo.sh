#!/usr/bin/env bash
# The demo: sets up, builds, then fine-tunes the bundled model (data/tiny-llama, a small LLaMA
# trained on the King James Bible) with QLoRA — NF4 frozen weights, LoRA adapters — on
# WordNet definitions (data/wordnet, alpaca format), and shows the eval loss falling.
# Each run writes a new folder runs/demo-<time>/ (nothing is overwritten).
#   scripts/demo.sh [--set key=value ...]     e.g. --set training.max_steps=100
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/setup.sh
echo "== building qlora-train"
scripts/build.sh qlora-train
config=configs/tiny/qlora.json
run="runs/demo-$(date +%Y%m%d-%H%M%S)"
echo
echo "== qlora-train inspect --config $config"
build/qlora-train inspect --config "$config" "$@" | grep -v '^  model\.\|^  lm_head'
echo
echo "== qlora-train train --config $config --set checkpoint.output_dir=$run"
start=$(date +%s)
build/qlora-train train --config "$config" --set checkpoint.output_dir="$run" "$@"
echo "(training took $(( $(date +%s) - start )) s)"
echo
echo "== eval loss, before -> after (from $run/metrics.jsonl)"
grep '"type":"eval"' "$run/metrics.jsonl" |
  sed -E 's/.*"step":([0-9]+),"loss":([0-9.e+-]+),"perplexity":([0-9.e+-]+).*/  step \1: loss \2  perplexity \3/'
echo
echo "== qlora-train eval --config $config --checkpoint $run/final"
build/qlora-train eval --config "$config" --checkpoint "$run/final" "$@"
echo
echo "The adapter is in $run/final (PEFT layout). The run directory also holds config.json,"
echo "metrics.jsonl and checkpoints; continue training with:"
echo "  build/qlora-train train --config $config --set checkpoint.output_dir=$run --set training.max_steps=600 --resume"
