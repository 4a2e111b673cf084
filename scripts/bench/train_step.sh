#!/usr/bin/env bash
# Tokens/s of one LoRA training step on the tiny model: `qlora-train train` (C++, LibTorch)
# against the same step in PyTorch eager + transformers + PEFT (scripts/bench/train_step_peft.py),
# one after the other in this invocation, same config (configs/tiny/bench.json), same threads.
#   scripts/bench/train_step.sh [--threads N] [--quant none|nf4] [--steps S] [--warmup W]
# N defaults to nproc; S timed steps (default 35) follow W untimed warm-up steps (default 5).
# Each side's figure is the median over the timed steps of (non-padding input tokens / step
# seconds); the C++ side's comes from the run's metrics.jsonl. Exit 1 when either side fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"  # the config's paths (data/tiny-llama, data/wordnet) are relative to the repository

threads=$(nproc)
quant=none
steps=35
warmup=5
config=configs/tiny/bench.json
usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --threads) threads=$2; shift 2 ;;
    --quant) quant=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "train_step.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for n in "$threads" "$steps" "$warmup"; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "train_step.sh: '$n' is not a whole number" >&2; exit 2; }
done
((threads >= 1 && steps >= 1)) || { echo "train_step.sh: --threads and --steps must be >= 1" >&2; exit 2; }
[[ $quant == none || $quant == nf4 ]] || { echo "train_step.sh: --quant must be none or nf4" >&2; exit 2; }
python=$repo/.venv-fixtures/bin/python
[[ -x $python ]] || { echo "train_step.sh: $python is missing; create it with scripts/fixtures/venv.sh" >&2; exit 2; }

bash scripts/build.sh qlora-train >/dev/null
work=$(mktemp -d "${TMPDIR:-/tmp}/qlt-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
total=$((warmup + steps))

# --- C++: the real binary -------------------------------------------------------------------
cpp_load=$(cut -d' ' -f1 /proc/loadavg)
cpp_status=0
build/qlora-train train --config "$config" \
  --set "quantization.type=$quant" --set "training.threads=$threads" \
  --set "training.max_steps=$total" --set "checkpoint.output_dir=$work/run" \
  >"$work/cpp.log" 2>&1 || cpp_status=$?
if ((cpp_status != 0)); then
  echo "train_step.sh: qlora-train train failed (exit $cpp_status); its last lines:" >&2
  tail -n 20 "$work/cpp.log" >&2
  exit 1
fi
cpp_json=$("$python" - "$work/run/metrics.jsonl" "$warmup" <<'EOF'
import json, statistics, sys
path, warmup = sys.argv[1], int(sys.argv[2])
rows = [json.loads(line) for line in open(path) if line.strip()]
train = [r for r in rows if r.get("type") == "train" and r["step"] > warmup]
if not train:
    sys.exit(f"{path}: no training records after step {warmup}")
print(json.dumps({
    "tokens_per_s_median": statistics.median(r["tokens"] / r["seconds"] for r in train),
    "tokens_per_step_mean": statistics.mean(r["tokens"] for r in train),
    "seconds_per_step_median": statistics.median(r["seconds"] for r in train),
    "timed_steps": len(train)}))
EOF
) || { echo "train_step.sh: could not read the C++ metrics" >&2; exit 1; }

# --- Python: PyTorch eager + transformers + PEFT -----------------------------------------------
py_load=$(cut -d' ' -f1 /proc/loadavg)
py_status=0
"$python" scripts/bench/train_step_peft.py --config "$config" --threads "$threads" \
  --quant "$quant" --steps "$steps" --warmup "$warmup" >"$work/py.json" 2>"$work/py.log" ||
  py_status=$?
if ((py_status != 0)); then
  echo "train_step.sh: train_step_peft.py failed (exit $py_status); its last lines:" >&2
  tail -n 20 "$work/py.log" >&2
  exit 1
fi

# --- table ------------------------------------------------------------------------------------
"$python" - "$cpp_json" "$work/py.json" "$config" "$threads" "$quant" "$warmup" "$steps" \
  "$cpp_load" "$py_load" <<'EOF'
import json, os, sys
cpp = json.loads(sys.argv[1])
py = json.load(open(sys.argv[2]))
cfg = json.load(open(sys.argv[3]))
threads, quant, warmup, steps, cpp["load"], py["load"] = sys.argv[4:10]
print(f"train step: {cfg['model']['path']} + LoRA r{cfg['adapter']['rank']} on "
      f"{len(cfg['adapter']['target_modules'])} linears, quant {quant}, "
      f"{cfg['training']['micro_batch_size']} packed rows of <= {cfg['data']['max_seq_len']} "
      f"tokens; median of {steps} steps after {warmup} warm-up")
print(f"machine: nproc {os.cpu_count()}, threads used {threads} (both sides), load average now "
      f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
v = py["versions"]
print(f"python side: torch {v['torch']}, transformers {v['transformers']}, peft {v['peft']}")
print(f"{'':22}{'tokens/s':>10}{'tokens/step':>13}{'s/step':>9}{'load at start':>15}")
for name, r in (("C++ qlora-train", cpp), ("Python PEFT (eager)", py)):
    print(f"{name:22}{r['tokens_per_s_median']:10.0f}{r['tokens_per_step_mean']:13.1f}"
          f"{r['seconds_per_step_median']:9.4f}{r['load']:>15}")
print(f"ratio C++/Python: {cpp['tokens_per_s_median'] / py['tokens_per_s_median']:.2f}")
EOF
