#!/usr/bin/env bash
# Tokens/s of one LoRA training step: `qlora-train train` (C++, LibTorch) against the same step
# in PyTorch eager + transformers + PEFT (scripts/bench/train_step_peft.py), one after the
# other in this invocation, same config, same threads.
#   scripts/bench/train_step.sh [--model tiny|smollm2] [--threads N[,N...]] [--quant Q]
#                               [--steps S] [--warmup W] [--no-build]
# tiny (default): the bundled 1.3 M-parameter model, configs/tiny/bench.json; Q none (default)
# or nf4, on both sides. smollm2: the SmolLM2-135M-Instruct Q4_1 GGUF (scripts/models/smollm2.sh),
# configs/smollm2/bench.json; transformers dequantizes it to fp32; Q int4 (default: C++ keeps the
# Q4_1 linears as stored and dequantizes them in each forward) or none (C++ too dequantizes them
# to fp32 once, at load: the same weights as the Python side).
# N defaults to nproc; a list (--threads 1,2) runs C++ then Python for each count in turn.
# S timed steps (default 35 tiny, 20 smollm2) follow W untimed warm-up steps (5 tiny, 3 smollm2).
# Each side's figure is the median over the timed steps of (non-padding input tokens / step
# seconds); the C++ side's comes from the run's metrics.jsonl. Also shown per side: seconds
# from the start to the model loaded (C++: to the GGUF loader's log line; Python:
# from_pretrained), to the first step, and the process's peak RSS. Exit 1 when a side fails.
# --no-build: use build/qlora-train as it is (e.g. when others build in the same tree).
# GPU modes (scripts/bench/train_step_gpu.sh, which has their options; scripts/bench/README.md):
#   --gpu [--smoke]: QLoRA r=64 on a random LLaMA-2-7B-shaped checkpoint, seq 2048, against PEFT
#   --kernels: the NF4 / INT4 dequantize and fused optimizer kernels against a copy
#   --prepare: download the Python wheels the GPU machine may lack into .gpu-carry/wheels
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
for arg in "$@"; do
  case $arg in --gpu | --kernels | --prepare) exec bash "$repo/scripts/bench/train_step_gpu.sh" "$@" ;; esac
done
cd "$repo"  # the configs' paths (data/..., models/...) are relative to the repository

model=tiny
threads_list=$(nproc)
quant=
steps=
warmup=
build=1
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --threads) threads_list=$2; shift 2 ;;
    --quant) quant=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "train_step.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case $model in
  tiny)
    config=configs/tiny/bench.json; steps=${steps:-35}; warmup=${warmup:-5}; quant=${quant:-none}
    py_quant=$quant
    [[ $quant == none || $quant == nf4 ]] || { echo "train_step.sh: --quant must be none or nf4 (tiny)" >&2; exit 2; }
    ;;
  smollm2)
    config=configs/smollm2/bench.json; steps=${steps:-20}; warmup=${warmup:-3}; quant=${quant:-int4}
    py_quant=none  # transformers loads a GGUF dequantized to fp32
    [[ $quant == int4 || $quant == none ]] || { echo "train_step.sh: --quant must be int4 or none (smollm2)" >&2; exit 2; }
    gguf=$(sed -n 's/.*"path": *"\([^"]*\.gguf\)".*/\1/p' "$config")
    [[ -f $gguf ]] || { echo "train_step.sh: $gguf is missing; fetch it with scripts/models/smollm2.sh" >&2; exit 2; }
    ;;
  *) echo "train_step.sh: --model must be tiny or smollm2" >&2; exit 2 ;;
esac
IFS=, read -r -a threads_counts <<<"$threads_list"
((${#threads_counts[@]} >= 1)) || { echo "train_step.sh: --threads is empty" >&2; exit 2; }
for n in "${threads_counts[@]}" "$steps" "$warmup"; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "train_step.sh: '$n' is not a whole number" >&2; exit 2; }
done
for n in "${threads_counts[@]}"; do
  ((n >= 1)) || { echo "train_step.sh: --threads must be >= 1" >&2; exit 2; }
done
((steps >= 1)) || { echo "train_step.sh: --steps must be >= 1" >&2; exit 2; }
python=$repo/.venv-fixtures/bin/python
[[ -x $python ]] || { echo "train_step.sh: $python is missing; create it with scripts/fixtures/venv.sh" >&2; exit 2; }

if ((build)); then
  bash scripts/build.sh qlora-train >/dev/null
else
  [[ -x build/qlora-train ]] || { echo "train_step.sh: build/qlora-train is missing (--no-build)" >&2; exit 2; }
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/qlt-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
total=$((warmup + steps))

# Runs a command with stdin closed, its stdout to --stdout FILE and its stderr to --log FILE
# with each line prefixed by the seconds since the start; writes to --json FILE: exit status,
# wall seconds, the seconds at which the first line containing each --mark NAME=TEXT appeared,
# and the child's peak RSS (getrusage RUSAGE_CHILDREN ru_maxrss, KiB on Linux: VmHWM of the one
# child waited for). Exits with the command's status.
# The launcher (stdin closed, stdout to a file, stderr lines timestamped with the first time each
# --mark text appears, exit status + wall time + peak RSS as JSON) is train_step_gpu.py's.
launcher=("$python" "$repo/scripts/bench/train_step_gpu.py" launch)

results=()  # one JSON file per (threads, side)
for threads in "${threads_counts[@]}"; do
  # --- C++: the real binary -----------------------------------------------------------------
  tag=$work/t$threads
  cpp_load=$(cut -d' ' -f1 /proc/loadavg)
  sets=(--set "training.threads=$threads" --set "training.max_steps=$total"
    --set "checkpoint.output_dir=$tag-run" --set "quantization.type=$quant")
  cpp_status=0
  "${launcher[@]}" --stdout "$tag-cpp.out" --log "$tag-cpp.log" --json "$tag-cpp.proc" \
    --mark "model_loaded=linear weights (" --mark "first_step=info training steps" \
    -- build/qlora-train train --config "$config" "${sets[@]}" || cpp_status=$?
  if ((cpp_status != 0)); then
    echo "train_step.sh: qlora-train train failed (exit $cpp_status, $threads threads); its last lines:" >&2
    tail -n 20 "$tag-cpp.log" >&2
    exit 1
  fi
  "$python" - "$tag-run/metrics.jsonl" "$warmup" "$tag-cpp.proc" "$threads" "$cpp_load" \
    >"$tag-cpp.json" <<'EOF' || { echo "train_step.sh: could not read the C++ metrics" >&2; exit 1; }
import json, statistics, sys
path, warmup, proc_path, threads, load = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
rows = [json.loads(line) for line in open(path) if line.strip()]
train = [r for r in rows if r.get("type") == "train" and r["step"] > warmup]
if not train:
    sys.exit(f"{path}: no training records after step {warmup}")
proc = json.load(open(proc_path))
print(json.dumps({
    "side": "C++ qlora-train", "threads": int(threads), "load": load,
    "tokens_per_s_median": statistics.median(r["tokens"] / r["seconds"] for r in train),
    "tokens_per_step_mean": statistics.mean(r["tokens"] for r in train),
    "seconds_per_step_median": statistics.median(r["seconds"] for r in train),
    "timed_steps": len(train),
    "model_loaded_s": proc["marks"].get("model_loaded"),  # GGUF loader's line; None otherwise
    "setup_s": proc["marks"].get("first_step"),
    "peak_rss_mb": proc["peak_rss_mb"]}))
EOF
  results+=("$tag-cpp.json")

  # --- Python: PyTorch eager + transformers + PEFT ---------------------------------------------
  py_load=$(cut -d' ' -f1 /proc/loadavg)
  py_status=0
  "${launcher[@]}" --stdout "$tag-py.out" --log "$tag-py.log" --json "$tag-py.proc" \
    -- "$python" scripts/bench/train_step_peft.py --config "$config" --threads "$threads" \
    --quant "$py_quant" --steps "$steps" --warmup "$warmup" || py_status=$?
  if ((py_status != 0)); then
    echo "train_step.sh: train_step_peft.py failed (exit $py_status, $threads threads); its last lines:" >&2
    tail -n 20 "$tag-py.log" >&2
    exit 1
  fi
  "$python" - "$tag-py.out" "$tag-py.proc" "$py_load" >"$tag-py.json" <<'EOF'
import json, sys
py, proc = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
py.pop("steps")
py.update(side="Python PEFT (eager)", load=sys.argv[3], model_loaded_s=py["timings"]["model_load_s"],
          setup_s=py["timings"]["setup_s"], peak_rss_mb=proc["peak_rss_mb"])
print(json.dumps(py))
EOF
  results+=("$tag-py.json")
done

# --- table ------------------------------------------------------------------------------------
"$python" - "$config" "$model" "$quant" "$warmup" "$steps" "${results[@]}" <<'EOF'
import json, os, sys
config, model, quant, warmup, steps = sys.argv[1:6]
rows = [json.load(open(p)) for p in sys.argv[6:]]
cfg = json.load(open(config))
if model == "smollm2":
    cpp = ("int4 g32 = the Q4_1 as stored" if quant == "int4" else "fp32, dequantized at load")
    weights = f"C++ {cpp}, Python fp32 (transformers dequantizes the GGUF at load)"
else:
    weights = f"quant {quant}"

print(f"train step: {cfg['model']['path']} + LoRA r{cfg['adapter']['rank']} on "
      f"{len(cfg['adapter']['target_modules'])} linears, {weights}, "
      f"{cfg['training']['micro_batch_size']} packed rows of <= {cfg['data']['max_seq_len']} "
      f"tokens; median of {steps} steps after {warmup} warm-up")
print(f"machine: nproc {os.cpu_count()}, threads as listed (both sides), load average now "
      f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
v = next(r["versions"] for r in rows if "versions" in r)
print(f"python side: torch {v['torch']}, transformers {v['transformers']}, peft {v['peft']}")
print("model load s: process start to the GGUF loaded (C++ log line; '-' for a model directory) /"
      " from_pretrained (Python); setup s: process start to the first step; RSS: peak resident")
print(f"{'':22}{'threads':>8}{'tokens/s':>10}{'tokens/step':>13}{'s/step':>9}"
      f"{'model load s':>14}{'setup s':>9}{'peak RSS MB':>13}{'load at start':>15}")
fmt = lambda x: "-" if x is None else f"{x:.1f}"
for r in rows:
    print(f"{r['side']:22}{r['threads']:>8}{r['tokens_per_s_median']:10.0f}"
          f"{r['tokens_per_step_mean']:13.1f}{r['seconds_per_step_median']:9.4f}"
          f"{fmt(r['model_loaded_s']):>14}{fmt(r['setup_s']):>9}{r['peak_rss_mb']:13.0f}"
          f"{r['load']:>15}")
for cpp, py in zip(rows[0::2], rows[1::2]):
    print(f"ratio C++/Python, {cpp['threads']} threads: "
          f"{cpp['tokens_per_s_median'] / py['tokens_per_s_median']:.2f}")
EOF
