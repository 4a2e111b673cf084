#!/usr/bin/env bash
# "What the papers claim, measured here": fine-tunes every adapter kind on the same data, steps,
# seed and schedule at the same trainable-parameter budget, evaluates each final DEPLOYABLE model
# on the held-out set, and writes the tables (runs/adapter-methods/results.md and the README
# section between <!-- adapter-methods:begin --> and <!-- adapter-methods:end -->).
#   scripts/experiments/adapter_methods.sh [--models tiny,smollm2] [--threads N] [--force]
#                                          [--only ID[,ID...]] [--root DIR] [--no-readme]
#                                          [--set key=value ...] [--tables-only]
# Methods (scripts/experiments/adapter_methods.py, METHODS): (1) qlora: LoRA r on NF4;
# (2) lora-int4: LoRA r on INT4 g32 (SmolLM2: its Q4_1 as stored); (3) qblora: Q-BLoRA λ=2 on NF4;
# (4) qablora: QA-BLoRA on INT4 g32, rank R matched to LoRA r's parameter count, merged into INT4
# g32 (eval --merge int4, exact); (5) l4q: L4Q 4-bit g32 LoRA r on the dense base, merged into
# INT4 g32 (exact); (6) lora-rtn: LoRA r on the dense base, merged then re-quantized to INT4 g32
# by round-to-nearest (the baseline of (4) and (5)). Plus each base model without an adapter.
# Settings: configs/tiny/methods.json and configs/smollm2/methods.json (the same for every method
# but adapter.type / rank / alpha / balance and quantization.type).
# Resumable: a method whose <root>/<model>/<method>/result.json exists is skipped (its figures
# are reused); an interrupted one continues (`train --resume`, evals already written are kept).
# --force reruns the selected methods (and base evals) from scratch; --only limits the methods.
# --set: an override for every train and eval command of every model (e.g. a quick trial:
# --set training.max_steps=5 --root /tmp/x --no-readme; a changed --set needs --force or a new --root).
# --tables-only: runs nothing; rewrites the tables from the records and <root>/meta.json of the
# last invocation that ran (after editing adapter_methods.py's table code).
# --threads: training.threads of every command (default: the config's, 1). QLT_BIN: the binary
# (default build/qlora-train; copy it first when others rebuild it). Needs python3 (stdlib only) and jq.
# A command that fails is recorded (<out>.failed.json: command, exit status, last log lines),
# shown in its table row, rerun by the next invocation, and makes the script exit 1 at the end.
# A merge that should be exact (qa-blora, l4q) but moves the held-out loss by more than 1e-3 is
# flagged as a suspected bug in its row and in result.json ("problems"), and the script exits 3.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"  # the configs' paths are relative to the repository
helper=scripts/experiments/adapter_methods.py

models=tiny,smollm2
threads=
force=0
only=
root=runs/adapter-methods
readme=1
tables_only=0
extra_sets=()
argv=("$@")
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --models) models=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --force) force=1; shift ;;
    --only) only=$2; shift 2 ;;
    --root) root=$2; shift 2 ;;
    --no-readme) readme=0; shift ;;
    --set) extra_sets+=(--set "$2"); shift 2 ;;
    --tables-only) tables_only=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "adapter_methods.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
bin=${QLT_BIN:-build/qlora-train}
[[ -x $bin ]] || { echo "adapter_methods.sh: $bin is missing (build it: scripts/build.sh qlora-train, or set QLT_BIN)" >&2; exit 2; }
[[ -z $threads || $threads =~ ^[1-9][0-9]*$ ]] || { echo "adapter_methods.sh: --threads must be >= 1" >&2; exit 2; }
IFS=, read -r -a model_list <<<"$models"
for model in "${model_list[@]}"; do
  [[ $model == tiny || $model == smollm2 ]] || { echo "adapter_methods.sh: unknown model '$model' (tiny, smollm2)" >&2; exit 2; }
done
read -r -a all_methods <<<"$(python3 $helper methods)"
methods=("${all_methods[@]}")
if [[ -n $only ]]; then
  IFS=, read -r -a methods <<<"$only"
  for m in "${methods[@]}"; do
    [[ " ${all_methods[*]} " == *" $m "* ]] || { echo "adapter_methods.sh: unknown method '$m' (${all_methods[*]})" >&2; exit 2; }
  done
fi
if [[ ",$models," == *",smollm2,"* && ! -f models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ]]; then
  echo "adapter_methods.sh: models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf is missing; fetch it with scripts/models/smollm2.sh" >&2
  exit 2
fi

# shellcheck disable=SC2054  # "smollm2,tiny" is one argument
table_args=(--root "$root" --models smollm2,tiny --meta "$root/meta.json")
((readme)) && table_args+=(--readme README.md)
if ((tables_only)); then
  [[ -f $root/meta.json ]] || { echo "adapter_methods.sh: $root/meta.json is missing: nothing ran yet" >&2; exit 2; }
  python3 $helper table "${table_args[@]}"
  exit 0
fi

started=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
log() { printf '[adapter-methods %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# run_logged TIMINGS PHASE LOG OUT -- CMD...: runs CMD (stdout to OUT via a temporary file,
# stderr to LOG), appends "PHASE<TAB>seconds" to TIMINGS. On failure writes OUT.failed.json
# (the command, its exit status and the last lines of LOG), shows them and returns 1.
failures=0
suspects=0
run_logged() {
  local timings=$1 phase=$2 logf=$3 out=$4
  shift 5
  local t0 t1 status=0
  rm -f "$out.failed.json"
  t0=$(date +%s.%N)
  "$@" >"$out.tmp" 2>"$logf" </dev/null || status=$?
  t1=$(date +%s.%N)
  if ((status != 0)); then
    echo "adapter_methods.sh: failed (exit $status): $*" >&2
    tail -n 5 "$logf" >&2
    jq -n --arg command "$*" --argjson status "$status" --arg log "$(tail -n 5 "$logf")" \
      '{command: $command, exit: $status, log_tail: $log}' >"$out.failed.json"
    rm -f "$out.tmp"
    failures=$((failures + 1))
    return 1
  fi
  mv "$out.tmp" "$out"
  awk -v a="$t0" -v b="$t1" -v p="$phase" 'BEGIN { printf "%s\t%.3f\n", p, b - a }' >>"$timings"
}

for model in "${model_list[@]}"; do
  config=configs/$model/methods.json
  mdir=$root/$model
  mkdir -p "$mdir"
  # The effective settings of the evals (with --set), as the table describes them.
  "$bin" config --config "$config" "${extra_sets[@]}" >"$mdir/methods.json"
  thread_set=()
  [[ -n $threads ]] && thread_set=(--set "training.threads=$threads")
  thread_set+=("${extra_sets[@]}")

  # The base model without an adapter, for reference.
  for q in $(python3 $helper base-quants --model "$model"); do
    out=$mdir/base-$q.json
    ((force)) && [[ -z $only ]] && rm -f "$out"
    [[ -f $out ]] && { log "$model base $q: done before, kept"; continue; }
    log "$model base $q: eval"
    run_logged "$mdir/timings.tsv" "base-$q" "$mdir/base-$q.log" "$out" -- \
      "$bin" eval --config "$config" --set "quantization.type=$q" "${thread_set[@]}" --json ||
      true  # recorded in base-$q.json.failed.json, shown in the table
  done

  for method in "${methods[@]}"; do
    dir=$mdir/$method
    if ((force)); then rm -rf "$dir"; fi
    if [[ -f $dir/result.json ]]; then
      log "$model $method: result.json exists, kept (--force reruns it)"
      continue
    fi
    mkdir -p "$dir"
    if ! sets_text=$(python3 $helper sets --config "$config" --model-dir "$mdir" --method "$method"); then
      failures=$((failures + 1))
      continue
    fi
    mapfile -t sets <<<"$sets_text"
    set_args=()
    for s in "${sets[@]}"; do set_args+=(--set "$s"); done
    set_args+=("${thread_set[@]}")
    merge=$(python3 $helper merge --method "$method")
    log "$model $method: ${sets[*]}"

    if [[ ! -f $dir/run/final/DONE ]]; then
      log "$model $method: train"
      run_logged "$dir/timings.tsv" train "$dir/train.log" "$dir/train.out" -- \
        "$bin" train --config "$config" "${set_args[@]}" --set "checkpoint.output_dir=$dir/run" \
        --set data.eval= --resume || continue  # train.out.failed.json: shown in the table
    fi
    if [[ -n $merge && ! -f $dir/eval-unmerged.json ]]; then
      log "$model $method: eval before the merge"
      run_logged "$dir/timings.tsv" eval-unmerged "$dir/eval-unmerged.log" "$dir/eval-unmerged.json" -- \
        "$bin" eval --config "$config" "${set_args[@]}" --checkpoint "$dir/run/final" --json ||
        continue
    fi
    if [[ ! -f $dir/eval-deployable.json ]]; then
      merge_args=()
      [[ -n $merge ]] && merge_args=(--merge "$merge")
      log "$model $method: eval of the deployable model${merge:+ (--merge $merge)}"
      run_logged "$dir/timings.tsv" eval-deployable "$dir/eval-deployable.log" "$dir/eval-deployable.json" -- \
        "$bin" eval --config "$config" "${set_args[@]}" --checkpoint "$dir/run/final" "${merge_args[@]}" --json ||
        continue
    fi
    status=0
    python3 $helper result --model-dir "$mdir" --method "$method" || status=$?
    if ((status == 3)); then  # recorded in result.json ("problems") and flagged in the table
      suspects=$((suspects + 1))
      echo "adapter_methods.sh: $model $method: reproduce with the commands in $dir/*.log" \
        "(first line of each) and $dir/train.log" >&2
    elif ((status != 0)); then
      exit "$status"
    fi
    log "$model $method: $(jq -r '"deployable loss \(.deployable.loss | .*10000 | round / 10000)" + (if .pre_merge then ", before the merge \(.pre_merge.loss | .*10000 | round / 10000)" else "" end)' "$dir/result.json")"
  done
done

# --- tables ---------------------------------------------------------------------------------
cmd="scripts/experiments/adapter_methods.sh${argv[*]:+ ${argv[*]}}"
[[ -n ${QLT_BIN:-} ]] && cmd="QLT_BIN=$QLT_BIN $cmd"
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1)
mem_gb=$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown) (HEAD when the tables were written; the binary was built $(date -u -r "$bin" '+%Y-%m-%d %H:%M'))"
threads_text=${threads:-1}
[[ -z $threads ]] && threads_text="1 (the configs)"
jq -n --arg command "$cmd" --arg machine "${cpu:-unknown CPU}, nproc $(nproc), ${mem_gb} GB, no GPU used" \
  --arg threads "$threads_text" --arg load_start "$load_start" \
  --arg load_end "$(cut -d' ' -f1-3 /proc/loadavg)" --arg binary "$bin" --arg commit "$commit" \
  --arg finished "$(date -u '+%Y-%m-%d %H:%M')" --argjson wall "$(($(date +%s) - started))" \
  '{command: $command, machine: $machine, threads: $threads, load_start: $load_start,
    load_end: $load_end, binary: $binary, commit: $commit, finished_utc: $finished, wall_s: $wall}' \
  >"$root/meta.json"
# Both models' tables, whichever this invocation ran (results of earlier runs are reused).
python3 $helper table "${table_args[@]}"
where=$root/results.md
((readme)) && where="$where and README.md"
log "done in $(($(date +%s) - started)) s; tables in $where"
if ((suspects > 0)); then
  echo "adapter_methods.sh: $suspects result(s) look like a bug (an exact merge moved the loss; flagged in the table, result.json 'problems')" >&2
  exit 3
fi
if ((failures > 0)); then
  echo "adapter_methods.sh: $failures command(s) failed (their rows say so; *.failed.json under $root)" >&2
  exit 1
fi
