#!/usr/bin/env bash
# Memory saved by activation checkpointing: the same short QLoRA run on the bundled model
# (configs/tiny/qlora.json, long packed rows so activations dominate) with
# training.activation_checkpointing false and true; prints each run's peak memory (CPU: peak
# RSS of the process; CUDA: peak allocated) and speed, and checks the adapters are identical.
#   scripts/bench/activation_checkpointing.sh [--set key=value ...]
#   e.g. scripts/bench/activation_checkpointing.sh --set training.device=cuda
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
bash scripts/build.sh qlora-train >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ac in false true; do
  build/qlora-train train --config configs/tiny/qlora.json --log-level info \
    --set checkpoint.output_dir="$tmp/ac-$ac" --set training.max_steps=4 \
    --set data.max_seq_len=512 --set training.micro_batch_size=16 --set data.eval= \
    --set training.threads=1 --set training.activation_checkpointing=$ac "$@" 2>&1 |
    grep -E 'trained [0-9]+ steps' | sed -E "s/.*trained/activation_checkpointing=$ac: trained/"
done
if cmp -s "$tmp/ac-false/final/adapter_model.safetensors" "$tmp/ac-true/final/adapter_model.safetensors"; then
  echo "adapters: byte-identical"
else
  echo "adapters: DIFFERENT"; exit 1
fi
