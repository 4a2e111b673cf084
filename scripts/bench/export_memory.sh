#!/usr/bin/env bash
# Peak memory of `qlora-train export` on random LLaMA-2-7B-shaped checkpoints with a few layers
# (issue 11: an export streams, holding about one layer in full precision beside the model as
# loaded). For each layer count L (default 2 and 4) it makes a random bf16 Hugging Face folder of
# 7B widths (scripts/bench/make_random_llama.py, cached in the work folder), trains a QLoRA
# adapter for one step on it (NF4 + LoRA r=64 on all 7 linears, 32 tokens), then exports it in
# each format and reads each process's peak RSS (/usr/bin/time %M). Printed per format: the peak
# for each L and its growth per added layer, next to what a layer weighs in NF4 (the loaded
# model), bf16 and fp32. "peft" (no merge: load + write the adapter) is the baseline: the rest
# of a format's peak over it is what the merge and the writer hold.
#   scripts/bench/export_memory.sh [--layers 2,4] [--formats peft,hf-bf16,...] [--work DIR]
#                                  [--threads N]
# QLT_BIN: the binary (default build/qlora-train; nothing is built). Needs the fixtures venv
# (scripts/fixtures/venv.sh) for make_random_llama.py, and about (0.8 L + 1.1) GB of disk per L.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
layers=2,4
formats=peft,hf-bf16,hf-nf4,gguf-f16,gguf-q4_1,hf-bf16-original
work=${TMPDIR:-/tmp}/qlt-export-memory
threads=2
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --layers) layers=$2; shift 2 ;;
    --formats) formats=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "export_memory.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
bin=${QLT_BIN:-build/qlora-train}
python=$repo/.venv-fixtures/bin/python
[[ -x $bin ]] || { echo "export_memory.sh: $bin is missing (scripts/build.sh qlora-train, or set QLT_BIN)" >&2; exit 2; }
[[ -x $python ]] || { echo "export_memory.sh: run scripts/fixtures/venv.sh first" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "export_memory.sh: /usr/bin/time is missing (apt-get install time)" >&2; exit 2; }
IFS=, read -r -a layer_list <<<"$layers"
IFS=, read -r -a format_list <<<"$formats"
mkdir -p "$work"

declare -A peak  # [format,L] -> MiB
for L in "${layer_list[@]}"; do
  model=$work/model-$L
  [[ -f $model/config.json ]] || "$python" scripts/bench/make_random_llama.py "$model" --layers "$L"
  config=$work/config-$L.json
  cat >"$config" <<JSON
{
  "model": {"path": "$model", "compute_dtype": "float32"},
  "quantization": {"type": "nf4", "block_size": 64, "double_quant": true},
  "adapter": {"type": "lora", "rank": 64, "alpha": 16, "dropout": 0,
              "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
  "data": {"train": "data/wordnet/train.jsonl", "eval": "data/wordnet/eval.jsonl", "format": "alpaca",
           "max_seq_len": 32, "packing": true, "train_on_inputs": true},
  "training": {"micro_batch_size": 1, "max_steps": 1, "seed": 1, "threads": $threads},
  "checkpoint": {"output_dir": "$work/run-$L", "every_steps": 1000},
  "eval": {"batch_size": 1, "max_batches": 1}
}
JSON
  if [[ ! -f $work/run-$L/final/adapter_model.safetensors ]]; then
    rm -rf "$work/run-$L"
    /usr/bin/time -f "%M" -o "$work/train-$L.rss" "$bin" train --config "$config" \
      >"$work/train-$L.log" 2>&1 || { echo "train (L=$L) failed: $work/train-$L.log" >&2; exit 1; }
  fi
  for f in "${format_list[@]}"; do
    format=${f%-original}
    extra=()
    [[ $f == *-original ]] && extra=(--merge-into original)
    out=$work/out-$L-$f
    rm -rf "$out"
    /usr/bin/time -f "%M" -o "$work/$f-$L.rss" "$bin" export --config "$config" \
      --checkpoint "$work/run-$L/final" --format "$format" --out "$out" "${extra[@]}" \
      >"$work/$f-$L.log" 2>&1 || { echo "export $f (L=$L) failed: $work/$f-$L.log" >&2; exit 1; }
    peak[$f,$L]=$(( $(tail -1 "$work/$f-$L.rss") / 1024 ))
    rm -rf "$out"
  done
done

# What one decoder layer of 7B widths weighs: 4*4096^2 + 3*4096*11008 parameters.
per_layer=$((4 * 4096 * 4096 + 3 * 4096 * 11008))
mib() { echo $(( $1 / 1048576 )); }
echo "random LLaMA-2-7B-shaped checkpoints (hidden 4096, intermediate 11008, vocab 32000), NF4 + LoRA r=64"
echo "one decoder layer: $(mib $((per_layer * 4))) MiB fp32, $(mib $((per_layer * 2))) MiB bf16, $(mib $((per_layer * 9 / 16))) MiB NF4 (+ double-quant scales)"
echo "embeddings + lm_head as loaded (fp32): $(mib $((2 * 32000 * 4096 * 4))) MiB"
printf "%-18s" "peak RSS (MiB)"
for L in "${layer_list[@]}"; do printf " %8s" "L=$L"; done
printf " %14s\n" "per layer"
for f in "${format_list[@]}"; do
  printf "%-18s" "$f"
  for L in "${layer_list[@]}"; do printf " %8s" "${peak[$f,$L]}"; done
  first=${layer_list[0]} last=${layer_list[-1]}
  if ((last > first)); then
    printf " %14s\n" "$(( (peak[$f,$last] - peak[$f,$first]) / (last - first) ))"
  else
    echo
  fi
done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); binary $bin"
