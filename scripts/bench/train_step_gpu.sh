#!/usr/bin/env bash
# The GPU modes of scripts/bench/train_step.sh (which hands --gpu, --kernels and --prepare here).
#   scripts/bench/train_step.sh --gpu [--build DIR] [--no-build] [--cache DIR] [--out DIR]
#       [--layers L] [--shape 7b|tiny] [--seq T] [--batch B] [--steps S] [--warmup W]
#       [--device cuda|cpu] [--python PY] [--py-attn causal|mask] [--no-peft] [--no-bnb] [--smoke]
#   scripts/bench/train_step.sh --kernels [--build DIR] [--no-build]
#   scripts/bench/train_step.sh --prepare [--wheel-budget-mib M]
# --gpu: QLoRA on a random LLaMA-2-7B-shaped checkpoint (make_random_llama.py, 32 layers, bf16,
# made once in the cache, default models/bench/), configs/bench/llama7b_qlora_gpu.json: NF4 +
# double quant, LoRA r 64 on all 7 linears, B = 4 rows x T = 2048 tokens (synthetic text),
# activation checkpointing, bf16, AdamW; W = 3 warm-up then S = 10 timed steps. In the same run:
# the bf16 matmul peak of the machine (torch, 8192^3), transformers + PEFT on the same checkpoint
# (bf16 LoRA; and QLoRA with bitsandbytes NF4 when importable), then one table: tokens/s, peak
# memory, TFLOP/s and MFU per side, ratios C++ / PEFT (FLOP formula: train_step_gpu.py).
# --smoke: --shape tiny --layers 2 --seq 128 --batch 2 --steps 2 --warmup 1 --device cpu (the
# whole pipeline on a CPU, in a minute; later options still apply).
# --build: default build-gpu/ when it exists, else build/; without --no-build the binary is built
# there first (cmake --build; the folder must be configured). --out: keep the configs, logs and
# figures there (default: a temporary folder, removed). --python: default .venv-fixtures/bin/python
# when it exists, else python3; peft, accelerate, psutil and bitsandbytes it lacks are unpacked
# from .gpu-carry/wheels (written by --prepare) into CACHE/pylib.
# --kernels: <build>/tests/gpu/qlt_gpu_bench --kernel all (NF4 / INT4 dequantize and the fused
# optimizer kernels next to a device-to-device copy), with the device's name.
# --prepare (on a machine with network): pip-downloads those wheels into .gpu-carry/wheels, with
# bitsandbytes cut to its CUDA 13.0 and CPU libraries; bitsandbytes is left out, saying why, when
# the wheels would exceed M MiB (default 24).
# Exit status: 0; 1 when a side failed (the table still shows the others); 2 on a bad argument.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
me="train_step.sh"
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "$me: $*" >&2; exit 2; }

mode='' build_dir='' build=1 cache=models/bench out='' layers='' shape='' seq='' batch=''
steps='' warmup='' device='' python='' py_attn=causal peft=1 bnb=1 smoke=0 budget_mib=24
while [[ $# -gt 0 ]]; do
  case $1 in
    --gpu) mode=gpu; shift ;;
    --kernels) mode=kernels; shift ;;
    --prepare) mode=prepare; shift ;;
    --build) build_dir=${2:?}; shift 2 ;;
    --no-build) build=0; shift ;;
    --cache) cache=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --layers) layers=${2:?}; shift 2 ;;
    --shape) shape=${2:?}; shift 2 ;;
    --seq) seq=${2:?}; shift 2 ;;
    --batch) batch=${2:?}; shift 2 ;;
    --steps) steps=${2:?}; shift 2 ;;
    --warmup) warmup=${2:?}; shift 2 ;;
    --device) device=${2:?}; shift 2 ;;
    --python) python=${2:?}; shift 2 ;;
    --py-attn) py_attn=${2:?}; shift 2 ;;
    --no-peft) peft=0; shift ;;
    --no-bnb) bnb=0; shift ;;
    --smoke) smoke=1; shift ;;
    --wheel-budget-mib) budget_mib=${2:?}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$me: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[[ -n $mode ]] || die "say --gpu, --kernels or --prepare"
if ((smoke)); then
  shape=${shape:-tiny} layers=${layers:-2} seq=${seq:-128} batch=${batch:-2} steps=${steps:-2}
  warmup=${warmup:-1} device=${device:-cpu}
fi
shape=${shape:-7b} layers=${layers:-32} seq=${seq:-2048} batch=${batch:-4} steps=${steps:-10}
warmup=${warmup:-3} device=${device:-cuda}
for n in "$layers" "$seq" "$batch" "$steps" "$warmup" "$budget_mib"; do
  [[ $n =~ ^[0-9]+$ ]] || die "'$n' is not a whole number"
done
((layers >= 1 && seq >= 2 && batch >= 1 && steps >= 1)) || die "--layers, --batch, --steps must be >= 1, --seq >= 2"
[[ $shape == 7b || $shape == tiny ]] || die "--shape must be 7b or tiny"
[[ $device == cuda || $device == cpu ]] || die "--device must be cuda or cpu"
[[ $py_attn == causal || $py_attn == mask ]] || die "--py-attn must be causal or mask"
if [[ -z $build_dir ]]; then
  build_dir=build
  [[ -d build-gpu ]] && build_dir="build-gpu"
fi
if [[ -z $python ]]; then
  python=python3
  [[ -x .venv-fixtures/bin/python ]] && python=$repo/.venv-fixtures/bin/python
fi
wheels=$repo/.gpu-carry/wheels

# --- --prepare: the wheels the GPU machine may lack ------------------------------------------
if [[ $mode == prepare ]]; then
  venv=$repo/.venv-fixtures/bin/python
  [[ -x $venv ]] || die "$venv is missing; create it with scripts/fixtures/venv.sh (its versions are carried)"
  mapfile -t pins < <("$venv" -c '
import importlib.metadata as m
for p in ("peft", "accelerate", "psutil", "bitsandbytes"):
    print(f"{p}=={m.version(p)}")')
  rm -rf "$wheels"
  mkdir -p "$wheels"
  echo "downloading ${pins[*]} (no dependencies) into $wheels"
  "$venv" -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" "${pins[@]}"
  # bitsandbytes ships one library per CUDA / ROCm / XPU version (~41 MiB); torch 2.11+cu130 on
  # the GPU machine loads libbitsandbytes_cuda130.so (BNB_CUDA_VERSION overrides): keep that and
  # the CPU one, drop the rest from the archive and its RECORD.
  "$venv" - "$wheels" <<'EOF'
import glob, os, re, sys, zipfile
for path in glob.glob(os.path.join(sys.argv[1], "bitsandbytes-*.whl")):
    keep = re.compile(r"libbitsandbytes_(cuda130|cpu)\.so$")
    drop = lambda n: re.search(r"libbitsandbytes_\w+\.so$", n) and not keep.search(n)
    tmp = path + ".tmp"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if drop(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = "".join(l for l in data.decode().splitlines(True)
                               if not drop(l.split(",")[0])).encode()
            dst.writestr(info, data)
    os.replace(tmp, path)
EOF
  for w in "$wheels"/*.whl; do
    [[ $w != *psutil* || $w == *abi3* ]] || echo "$me: warning: $(basename "$w") is not an abi3 wheel; it may not import on the GPU machine's Python" >&2
    printf '%8d KiB  %s\n' "$(($(stat -c %s "$w") / 1024))" "$(basename "$w")"
  done
  total=$(du -cb "$wheels"/*.whl | tail -1 | cut -f1)
  if ((total > budget_mib * 1048576)); then
    rm -f "$wheels"/bitsandbytes-*.whl
    echo "bitsandbytes left out: the wheels would take $((total / 1048576)) MiB, over the --wheel-budget-mib $budget_mib (the carry holds 64 MiB in all, .deb files included); the GPU run measures PEFT bf16 LoRA only"
  fi
  echo "carry .gpu-carry/wheels: $(($(du -cb "$wheels"/*.whl | tail -1 | cut -f1) / 1024)) KiB in all"
  exit 0
fi

# --- the binaries -------------------------------------------------------------------------------
target=qlora-train
[[ $mode == kernels ]] && target=qlt_gpu_bench
bin=$build_dir/$target
[[ $mode == kernels ]] && bin=$build_dir/tests/gpu/qlt_gpu_bench
if ((build)); then
  [[ -f $build_dir/CMakeCache.txt ]] || die "$build_dir is not a configured build folder (scripts/gpu-check.sh configures build-gpu/); or pass --no-build"
  cmake --build "$build_dir" --target "$target"
fi
[[ -x $bin ]] || die "$bin is missing (without --no-build, cmake --build $build_dir --target $target)"

if [[ $mode == kernels ]]; then
  if command -v nvidia-smi >/dev/null; then
    echo "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
  else
    echo "device: $("$python" -c 'import torch; print(torch.cuda.get_device_name())' 2>/dev/null || echo 'unknown (no nvidia-smi, no torch CUDA)')"
  fi
  echo "$bin --kernel all"
  exec "$bin" --kernel all
fi

# --- --gpu ------------------------------------------------------------------------------------------
"$python" -c 'import torch, transformers' 2>/dev/null || die "$python cannot import torch and transformers (--python)"
if [[ $device == cuda ]]; then
  "$python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' ||
    die "torch sees no CUDA device; --device cpu (or --smoke) runs the pipeline on the CPU"
fi
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/qlt-bench-gpu.XXXXXX")
trap 'rm -rf "$work"' EXIT
helper=(scripts/bench/train_step_gpu.py)
total=$((warmup + steps))

# Python packages: what the interpreter lacks comes from the carried wheels (unpacked = installed).
importable() { "$python" -c "import $1" >/dev/null 2>&1; }
import_error() { "$python" -c "import $1" 2>&1 | tail -1; }
needed=()
((peft)) && needed+=(psutil accelerate peft)
((peft && bnb)) && needed+=(bitsandbytes)
for mod in "${needed[@]}"; do
  importable "$mod" && continue
  for w in "$wheels/$mod"-*.whl; do
    [[ -f $w ]] || continue
    "$python" -m zipfile -e "$w" "$cache/pylib"
    echo "unpacked $(basename "$w") into $cache/pylib"
    [[ ${PYTHONPATH:-} == "$cache/pylib"* ]] || export PYTHONPATH=$cache/pylib${PYTHONPATH:+:$PYTHONPATH}
  done
done
peft_reason='' bnb_reason=''
if ((!peft)); then
  peft_reason="--no-peft"
elif ! importable peft; then
  peft_reason="import peft failed: $(import_error peft) (no wheel in .gpu-carry/wheels? run --prepare)"
fi
if ((!bnb)); then
  bnb_reason="--no-bnb"
elif [[ -n $peft_reason ]]; then
  bnb_reason="needs peft: $peft_reason"
elif ! importable bitsandbytes; then
  bnb_reason="import bitsandbytes failed: $(import_error bitsandbytes)"
fi

# The checkpoint (made once: config.json is written last, so a folder without it is remade).
model=$cache/llama2-$shape-random-L$layers
[[ $shape == 7b ]] || model=$cache/$shape-random-L$layers
if [[ ! -f $model/config.json ]]; then
  echo "making $model (random bf16 weights, $shape widths, $layers layers) ..."
  t0=$SECONDS
  "$python" scripts/bench/make_random_llama.py "$model" --layers "$layers" --shape "$shape"
  echo "  made in $((SECONDS - t0)) s"
fi
# The data: lines of random words, each longer than T tokens, so each row is one example cut to T.
# Made again when it has fewer lines than the run takes rows (no row is seen twice).
lines=$((batch * (total + 1)))
data=$cache/random-text-T$seq.jsonl
if [[ ! -f $data ]] || (($(wc -l <"$data") < lines)); then
  "$python" "${helper[@]}" data "$data" --lines "$lines" --tokens "$seq"
fi

# The effective config: the shipped one with this run's shape; both sides read it.
config=$work/config.json
"$bin" config --config configs/bench/llama7b_qlora_gpu.json --set "model.path=$model" \
  --set "data.train=$data" --set "data.max_seq_len=$seq" --set "training.micro_batch_size=$batch" \
  --set "training.max_steps=$total" --set "training.device=$device" \
  --set "checkpoint.output_dir=$work/cpp-run" >"$config" 2>"$work/config.log" ||
  { cat "$work/config.log" >&2; die "the config does not validate"; }

# The bf16 matmul peak of this machine, now.
peak_args=(--device "$device")
[[ $device == cpu ]] && peak_args+=(--size 512 --iters 4 --trials 3)
"$python" "${helper[@]}" peak "${peak_args[@]}" --json "$work/peak.json"

failed=0
sides=()
skip() {  # side name, reason, json file
  "$python" -c 'import json, sys; print(json.dumps({"side": sys.argv[1], "reason": sys.argv[2]}))' "$1" "$2" >"$3"
  sides+=("$3")
}

# --- C++ -------------------------------------------------------------------------------------------
echo "C++: $bin train ($layers layers, $batch x $seq tokens, $total steps) ..."
status=0
"$python" "${helper[@]}" launch --stdout "$work/cpp.out" --log "$work/cpp.log" --json "$work/cpp.proc" \
  --mark "first_step=info training steps" --mark "model_loaded=info data " \
  -- "$bin" train --config "$config" || status=$?
if ((status == 0)) &&
  "$python" "${helper[@]}" cpp "$work/cpp-run/metrics.jsonl" "$work/cpp.log" "$work/cpp.proc" "$warmup" \
    >"$work/cpp.json"; then
  sides+=("$work/cpp.json")
else
  echo "$me: qlora-train train failed (exit $status); its last lines:" >&2
  tail -n 20 "$work/cpp.log" >&2
  skip "C++ qlora-train" "failed (exit $status)" "$work/cpp.json"
  failed=1
fi
cp "$work/cpp-run/metrics.jsonl" "$work/cpp-metrics.jsonl" 2>/dev/null || true
rm -rf "$work/cpp-run"  # the adapter and the final checkpoint (GBs at 7B)

# --- Python: transformers + PEFT -----------------------------------------------------------------
py_side() {  # tag, side name, quant
  local tag=$1 name=$2 quant=$3 status=0
  echo "Python: $name ..."
  "$python" "${helper[@]}" launch --stdout "$work/$tag.out" --log "$work/$tag.log" --json "$work/$tag.proc" \
    -- "$python" scripts/bench/train_step_peft.py --config "$config" --quant "$quant" \
    --random-tokens --attn "$py_attn" --device "$device" --steps "$steps" --warmup "$warmup" ||
    status=$?
  if ((status == 0)) &&
    "$python" "${helper[@]}" pyside "$work/$tag.out" "$work/$tag.proc" "$name" >"$work/$tag.json"; then
    sides+=("$work/$tag.json")
  else
    echo "$me: train_step_peft.py --quant $quant failed (exit $status); its last lines:" >&2
    tail -n 20 "$work/$tag.log" >&2
    skip "$name" "failed (exit $status)" "$work/$tag.json"
    failed=1
  fi
}
if [[ -z $peft_reason ]]; then
  py_side peft-bf16 "PEFT bf16 LoRA" none
else
  skip "PEFT bf16 LoRA" "$peft_reason" "$work/peft-bf16.json"
fi
if [[ -z $bnb_reason ]]; then
  py_side peft-nf4 "PEFT QLoRA (bitsandbytes NF4)" nf4
else
  skip "PEFT QLoRA (bitsandbytes NF4)" "$bnb_reason" "$work/peft-nf4.json"
fi

# --- the table ------------------------------------------------------------------------------------
echo
echo "Python side: $py_attn attention (causal = SDPA is_causal, no mask; the C++ side passes its"
echo "packed-rows [B, 1, T, T] mask to SDPA), random token ids of the C++ rows' shape"
"$python" "${helper[@]}" report "$config" "$work/peak.json" "${sides[@]}" --steps "$steps" \
  --warmup "$warmup" --json "$work/figures.json" | tee "$work/report.txt"
if [[ -n $out ]]; then
  mkdir -p "$out"
  cp "$work"/*.json "$work"/*.log "$work"/*.txt "$work"/*.jsonl "$out"/ 2>/dev/null || true
  echo "records: $out"
fi
exit "$failed"
