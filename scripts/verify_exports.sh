#!/usr/bin/env bash
# Exports checked by their readers (issue 11). Trains a short LoRA run (or takes --checkpoint),
# writes it in every `qlora-train export` format, and shows that the program that will read
# each output agrees with our fp32 `qlora-train eval` of that same output, each figure against
# a tolerance stated per format (scripts/fixtures/reader_checks.py derives them). Not run by
# CI: it needs the packages of scripts/fixtures/venv.sh (transformers, bitsandbytes, gguf,
# llama-cpp-python) and build/qlora-train (scripts/build.sh qlora-train; qlt_tests too for the
# test-suite step).
#
#   scripts/verify_exports.sh [--model tiny|smollm2|all] [--steps N] [--checkpoint DIR]
#                             [--keep DIR] [--no-suite]
#     --model       tiny: data/tiny-llama (default); smollm2: models/smollm2/ (fetched by
#                   scripts/models/smollm2.sh); all: tiny, then smollm2 if it is present
#     --steps N     steps of the short run (default 20; configs/<model>/qlora.json, NF4 resp.
#                   INT4 base, 256-token sequences for SmolLM2)
#     --checkpoint  use this adapter (<run>/final or a checkpoint folder) instead; one model only
#     --keep DIR    work in DIR and keep everything (default: a temporary folder, removed)
#     --no-suite    skip the test-suite step (below)
#
# Per model and format (eval config configs/<model>/eval.json, its first batch, fp32):
#   hf-bf16  transformers loads the folder: logits vs ours (check_hf_export.py)
#   hf-nf4   transformers + bitsandbytes: (a) Linear4bit compute dtype set to float32 after
#            loading: logits vs ours; (b) as written (bnb_4bit_compute_dtype bfloat16), with the
#            tolerance derived from bf16's roundings (check_bnb_load.py --emulate)
#   gguf-*   the gguf package decodes every tensor as we do (bit-identical logits of an F32
#            copy); llama.cpp on that copy (fp32) and on the file: logits and perplexity vs
#            ours, tolerances from emulating llama.cpp's activation rounding
#            (check_gguf_export.py --file)
# Test-suite step: `qlt_tests "[gguf_export]"` exports the test models and SmolLM2 in every
# file type and dumps our decoding of each tensor; gguf.quants.dequantize must equal it bit
# for bit (check_gguf_export.py --tensors-only).
# PYTHON, QLORA_TRAIN, QLT_TESTS override .venv-fixtures/bin/python, build/qlora-train and
# build/tests/qlt_tests.
# Prints a summary table (the checks' RESULT lines; also WORK/summary.md) and exits 1 if a
# figure is outside its tolerance, 2 if a step fails. Full log: WORK/verify.log.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo" || exit 2
py=${PYTHON:-.venv-fixtures/bin/python}
bin=${QLORA_TRAIN:-build/qlora-train} tests=${QLT_TESTS:-build/tests/qlt_tests}
models=tiny steps=20 checkpoint="" keep="" suite=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --model) models=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --checkpoint) checkpoint=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --no-suite) suite=0; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $models in
  tiny|smollm2) ;;
  all) models="tiny"; [[ -f models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ]] && models="tiny smollm2" ;;
  *) echo "--model: tiny, smollm2 or all" >&2; exit 2 ;;
esac
[[ -n $checkpoint && $models == *" "* ]] && { echo "--checkpoint needs one --model" >&2; exit 2; }
[[ -x $py ]] || { echo "$py missing: run scripts/fixtures/venv.sh" >&2; exit 2; }
[[ -x $bin ]] || { echo "$bin missing: run scripts/build.sh qlora-train" >&2; exit 2; }
if [[ -n $keep ]]; then work=$keep; mkdir -p "$work"; else work=$(mktemp -d /tmp/qlt-verify-exports.XXXXXX); trap 'rm -rf "$work"' EXIT; fi
work=$(cd "$work" && pwd)
log=$work/verify.log
: >"$log"
status=0
export PYTHONWARNINGS=ignore TOKENIZERS_PARALLELISM=false

# run TITLE CMD...: runs a step, its output to the log; a failure sets status 2.
# check TITLE CMD...: runs a check, and shows its RESULT lines; exit 1 (a figure outside its
# tolerance) sets status 1, another failure status 2.
shown=0
execute() {
  echo "== $1" | tee -a "$log"
  echo "\$ ${*:2}" >>"$log"
  "${@:2}" >>"$log" 2>&1
}
failed() {
  echo "   FAILED (exit $1): $(tail -n 1 "$log")" | tee -a "$log"
  status=2
}
run() {
  execute "$@" && return 0
  local rc=$?
  failed $rc
  return $rc
}
check() {
  execute "$@"
  local rc=$?
  grep -F "RESULT|" "$log" | tail -n +$((shown + 1)) | cut -d'|' -f2- | sed 's/^/   /'
  shown=$(grep -cF "RESULT|" "$log")
  if [[ $rc -eq 1 ]]; then ((status == 0)) && status=1; elif [[ $rc -ne 0 ]]; then failed $rc; fi
  return $rc
}

for model in $models; do
  train_cfg=configs/$model/qlora.json eval_cfg=configs/$model/eval.json
  sets=(--set training.max_steps="$steps" --set checkpoint.every_steps=0 --set eval.max_batches=1)
  [[ $model == smollm2 ]] && sets+=(--set data.max_seq_len=256)
  dir=$work/$model
  mkdir -p "$dir"
  ckpt=$checkpoint
  if [[ -z $ckpt ]]; then
    run "$model: train $steps steps ($train_cfg)" "$bin" train --config "$train_cfg" \
      --set checkpoint.output_dir="$dir/run" "${sets[@]}" --log-level warn || continue
    ckpt=$dir/run/final
  fi
  for fmt in hf-bf16 hf-nf4 gguf-f16 gguf-bf16 gguf-q8_0 gguf-q4_0 gguf-q4_1; do
    out=$dir/$fmt; [[ $fmt == gguf-* ]] && out=$out.gguf
    run "$model: export --format $fmt" "$bin" export --config "$train_cfg" --checkpoint "$ckpt" \
      --format "$fmt" --out "$out" --overwrite --log-level warn || continue
    ours=$dir/$fmt.ours.safetensors
    run "$model: our eval of $fmt" "$bin" eval --config "$eval_cfg" --set model.path="$out" \
      --set quantization.type=none --set eval.max_batches=1 --dump-logits "$ours" --json --log-level error || continue
    label=$model/$fmt
    case $fmt in
      hf-bf16) check "$label: transformers" "$py" scripts/fixtures/check_hf_export.py "$out" "$ours" \
                 --dtype float32 --rtol 1e-5 --label "$label" ;;
      hf-nf4)
        check "$label: bitsandbytes, float32 compute" "$py" scripts/fixtures/check_bnb_load.py "$out" "$ours" \
          --dtype float32 --compute-dtype float32 --rtol 1e-5 --label "$label"
        check "$label: bitsandbytes, compute dtype as written" "$py" scripts/fixtures/check_bnb_load.py "$out" "$ours" \
          --dtype float32 --emulate --rtol 1e-5 --label "$label" ;;
      gguf-*) check "$label: gguf, llama.cpp" "$py" scripts/fixtures/check_gguf_export.py --file "$out" --ours "$ours" \
                --config "$eval_cfg" --bin "$bin" --label "$label" --work "$dir" ;;
    esac
  done
done

if [[ $suite == 1 ]]; then
  if [[ -x $tests ]]; then
    check "test suite: [gguf_export] files, our tensor decoding vs gguf" "$py" scripts/fixtures/check_gguf_export.py \
      --binary "$tests" --tensors-only --label "test-suite exports"
  else
    echo "== test suite: $tests missing (scripts/build.sh qlt_tests); skipped" | tee -a "$log"
  fi
fi

# Summary: every RESULT line, as a Markdown table.
{
  "$py" -c 'from importlib.metadata import version as v
print("transformers %s, bitsandbytes %s, gguf %s, llama-cpp-python %s, torch %s" % tuple(
    v(p) for p in ("transformers", "bitsandbytes", "gguf", "llama_cpp_python", "torch")))'
  echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; qlora-train $("$bin" --version)"
  echo
  echo "| export | reader | figure | tolerance | |"
  echo "|---|---|---|---|---|"
  grep -F "RESULT|" "$log" | cut -d'|' -f2- | sed 's/^/| /; s/$/ |/; s/|/ | /g; s/  */ /g; s/^ //'
} >"$work/summary.md"
echo
cat "$work/summary.md"
echo
case $status in
  0) echo "all figures within their tolerances (log: $log)" ;;
  1) echo "FAIL: a figure is outside its tolerance (log: $log)" ;;
  *) echo "ERROR: a step failed (log: $log)" ;;
esac
[[ -n $keep ]] || echo "(the work folder is removed; --keep DIR keeps it)"
exit $status
