#!/usr/bin/env bash
# Peak memory and tokens/s of an L4Q training step against a LoRA step, same model, base, rank,
# batch and sequence, measured one after the other in this invocation.
#   scripts/bench/adapter_step_memory.sh [--model tiny|smollm2|all] [--quant Q[,Q...]]
#                                        [--adapters A[,A...]] [--threads N] [--steps S]
#                                        [--warmup W] [--repeat K] [--readme]
# Each run is `qlora-train train` with the model's bench config (configs/tiny/bench.json: 4
# packed rows of <= 256 tokens; configs/smollm2/bench.json: 1 row of <= 256 tokens; LoRA rank 16,
# alpha 32 on all 7 linears) and --set adapter.type=A, quantization.type=Q, adapter.dropout=0
# (L4Q has none), W + S steps, no eval, no checkpoint before the final adapter. Per run:
#   peak RSS   the process's maximum resident set (/usr/bin/time %M, MiB): model load included;
#   step RSS   the trainer's `mem` column (VmRSS after each step, MiB), median over timed steps;
#   tokens/s   median over the S timed steps (after W warm-up steps) of tokens / step seconds;
#   params     trainable parameters (the trainer's log line; L4Q's include its scales/offsets).
# Defaults: --model all, --quant none,int4, --adapters lora,l4q, --threads 1, --repeat 1,
# S/W = 30/5 (tiny) and 8/2 (smollm2). --repeat K runs the adapters K times, alternating
# (lora, l4q, lora, l4q, ...), so both see the same machine state. QLT_BIN: the binary
# (default build/qlora-train; nothing is built). --readme: also writes the table into README.md
# between <!-- adapter-step-memory:begin --> and <!-- adapter-step-memory:end --> (inside the
# adapter-methods section of scripts/experiments/adapter_methods.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

models=all
quants=none,int4
adapters=lora,l4q
threads=1
steps=
warmup=
repeat=1
readme=0
argv=("$@")
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --model) models=$2; shift 2 ;;
    --quant) quants=$2; shift 2 ;;
    --adapters | --adapter) adapters=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --readme) readme=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "adapter_step_memory.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[[ $models == all ]] && models=tiny,smollm2
for n in "$threads" "$repeat" ${steps:+"$steps"} ${warmup:+"$warmup"}; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "adapter_step_memory.sh: '$n' is not a whole number" >&2; exit 2; }
done
((threads >= 1 && repeat >= 1)) || { echo "adapter_step_memory.sh: --threads and --repeat must be >= 1" >&2; exit 2; }
bin=${QLT_BIN:-build/qlora-train}
[[ -x $bin ]] || { echo "adapter_step_memory.sh: $bin is missing (scripts/build.sh qlora-train, or set QLT_BIN)" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "adapter_step_memory.sh: /usr/bin/time is missing (apt-get install time)" >&2; exit 2; }
IFS=, read -r -a model_list <<<"$models"
IFS=, read -r -a quant_list <<<"$quants"
IFS=, read -r -a adapter_list <<<"$adapters"
for a in "${adapter_list[@]}"; do
  [[ $a == lora || $a == l4q || $a == blora || $a == qa-blora ]] || { echo "adapter_step_memory.sh: unknown adapter '$a'" >&2; exit 2; }
done
# Records (per run: .json, .log, .time; the table: table.md) stay in runs/ (git-ignored); the
# run folders themselves (adapters) are removed.
work=runs/adapter-step-memory/$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$work"
started=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

records=()
for model in "${model_list[@]}"; do
  case $model in
    tiny) config=configs/tiny/bench.json; s=${steps:-30}; w=${warmup:-5} ;;
    smollm2)
      config=configs/smollm2/bench.json; s=${steps:-8}; w=${warmup:-2}
      [[ -f models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ]] ||
        { echo "adapter_step_memory.sh: fetch the model first: scripts/models/smollm2.sh" >&2; exit 2; } ;;
    *) echo "adapter_step_memory.sh: --model must be tiny, smollm2 or all" >&2; exit 2 ;;
  esac
  ((s >= 1)) || { echo "adapter_step_memory.sh: --steps must be >= 1" >&2; exit 2; }
  for quant in "${quant_list[@]}"; do
    for ((k = 1; k <= repeat; k++)); do
      for adapter in "${adapter_list[@]}"; do
        tag=$work/$model-$quant-$adapter-$k
        load=$(cut -d' ' -f1 /proc/loadavg)
        echo "[adapter-step-memory] $model quant $quant $adapter (run $k): $((w + s)) steps, load $load" >&2
        status=0
        /usr/bin/time -f '%M %e' -o "$tag.time" "$bin" train --config "$config" \
          --set "adapter.type=$adapter" --set "quantization.type=$quant" --set adapter.dropout=0 \
          --set "training.max_steps=$((w + s))" --set "training.threads=$threads" \
          --set "checkpoint.output_dir=$tag-run" --set checkpoint.every_steps=0 \
          --set logging.every_steps=1 --set eval.every_steps=0 --set data.eval= \
          </dev/null >"$tag.out" 2>"$tag.log" || status=$?
        if ((status != 0)); then
          echo "adapter_step_memory.sh: $model $quant $adapter failed (exit $status):" >&2
          tail -n 10 "$tag.log" >&2
          exit 1
        fi
        python3 - "$tag" "$model" "$quant" "$adapter" "$k" "$w" "$load" >"$tag.json" <<'EOF'
import json, re, statistics, sys
tag, model, quant, adapter, k, warmup, load = sys.argv[1:]
rows = [json.loads(l) for l in open(f"{tag}-run/metrics.jsonl") if l.strip()]
timed = [r for r in rows if r.get("type") == "train" and r["step"] > int(warmup)]
log = open(f"{tag}.log").read()
params = re.search(r"-> (\d+) trainable parameters", log)
peak_log = re.search(r"peak memory (\d+) MB", log)
peak_kib, wall = open(f"{tag}.time").read().split()[-2:]
print(json.dumps({
    "model": model, "quant": quant, "adapter": adapter, "run": int(k), "load": load,
    "timed_steps": len(timed),
    "tokens_per_step": statistics.mean(r["tokens"] for r in timed),
    "tokens_per_s": statistics.median(r["tokens"] / r["seconds"] for r in timed),
    "seconds_per_step": statistics.median(r["seconds"] for r in timed),
    # the trainer's memory_mb is VmRSS kB / 1000; both figures here are MiB
    "step_rss_mb": statistics.median(r["memory_mb"] * 1000 / 1024 for r in timed),
    "peak_rss_mb": int(peak_kib) / 1024, "trainer_peak_mb": int(peak_log.group(1)) * 1000 / 1024 if peak_log else None,
    "params": int(params.group(1)) if params else None, "wall_s": float(wall)}))
EOF
        records+=("$tag.json")
        cp "$tag-run/metrics.jsonl" "$tag.metrics.jsonl"
        rm -rf "$tag-run"
      done
    done
  done
done

cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1)
cmd="scripts/bench/adapter_step_memory.sh${argv[*]:+ ${argv[*]}}"
[[ -n ${QLT_BIN:-} ]] && cmd="QLT_BIN=$QLT_BIN $cmd"
python3 - "$cmd" "${cpu:-unknown CPU}, nproc $(nproc)" "$threads" "$load_start" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" "$(($(date +%s) - started))" "$(date -u '+%Y-%m-%d %H:%M')" \
  "${records[@]}" >"$work/table.md" <<'EOF'
import json, statistics, sys
cmd, machine, threads, load_start, load_end, wall, when = sys.argv[1:8]
recs = [json.load(open(p)) for p in sys.argv[8:]]
names = {"tiny": "tiny (4 x <= 256 tokens)", "smollm2": "SmolLM2-135M (1 x <= 256 tokens)"}
# Weights of the 7 decoder linears of all layers (eval --json decoder_linear_bytes / 4, dense).
LINEAR_WEIGHTS = {"tiny": 786_432, "smollm2": 106_168_320}
bases = {"none": "dense fp32", "int4": "INT4 g32", "nf4": "NF4"}
out = [f"Made by `{cmd}` on {when} UTC: {machine}, `training.threads` {threads}, load average "
       f"{load_start} at the start, {load_end} at the end, {int(wall) / 60:.1f} min. Rank 16 on all "
       f"7 linears, dropout 0, fp32 compute; every figure of a row is the median over its runs "
       f"(run-to-run range in brackets when --repeat > 1).", "",
       "| model | base | adapter | trainable params | tokens/s | s/step | step RSS MiB | peak RSS MiB |",
       "|---|---|---|---:|---:|---:|---:|---:|"]
groups = {}
for r in recs:
    groups.setdefault((r["model"], r["quant"], r["adapter"]), []).append(r)

def cell(rs, key, fmt):
    vals = [r[key] for r in rs]
    s = fmt.format(statistics.median(vals))
    if len(vals) > 1:
        s += f" ({fmt.format(min(vals))}-{fmt.format(max(vals))})"
    return s

summary = []
for (model, quant, adapter), rs in groups.items():
    out.append(f"| {names.get(model, model)} | {bases.get(quant, quant)} | {adapter} | "
               f"{rs[0]['params']:,} | {cell(rs, 'tokens_per_s', '{:.0f}')} | "
               f"{cell(rs, 'seconds_per_step', '{:.2f}')} | {cell(rs, 'step_rss_mb', '{:.0f}')} | "
               f"{cell(rs, 'peak_rss_mb', '{:.0f}')} |")
for (model, quant, adapter), rs in groups.items():
    if adapter != "l4q" or (model, quant, "lora") not in groups:
        continue
    lo = groups[(model, quant, "lora")]
    med = lambda g, k: statistics.median(r[k] for r in g)
    summary.append(
        f"{names.get(model, model).split(' (')[0]}, {bases.get(quant, quant)} base: L4Q's peak RSS "
        f"{med(rs, 'peak_rss_mb') - med(lo, 'peak_rss_mb'):+.0f} MiB "
        f"({med(rs, 'peak_rss_mb') / med(lo, 'peak_rss_mb') - 1:+.0%}) and step RSS "
        f"{med(rs, 'step_rss_mb') - med(lo, 'step_rss_mb'):+.0f} MiB against LoRA's, "
        f"{rs[0]['params'] - lo[0]['params']:,} more trainable parameters (its scales and offsets: "
        f"x 16 bytes with gradient and AdamW state = {(rs[0]['params'] - lo[0]['params']) * 16 / 2**20:.0f} MiB); "
        f"tokens/s x{med(rs, 'tokens_per_s') / med(lo, 'tokens_per_s'):.2f}."
        + (f" (One fp32 gradient the size of the decoder's linear weights, which L4Q's chunked "
           f"backward never holds, would be {LINEAR_WEIGHTS[model] * 4 / 2**20:.0f} MiB.)"
           if model in LINEAR_WEIGHTS else ""))
out.append("")
out += [f"- {s}" for s in summary]
print("\n".join(out))
EOF
cat "$work/table.md"
echo "[adapter-step-memory] records: $work" >&2
if ((readme)); then
  { echo "### Peak memory of an L4Q step against a LoRA step"
    echo
    echo "Generated by \`scripts/bench/adapter_step_memory.sh\` (see \`scripts/bench/README.md\`)."
    echo
    cat "$work/table.md"; } |
    python3 scripts/experiments/adapter_methods.py block --file README.md \
      --begin "<!-- adapter-step-memory:begin -->" --end "<!-- adapter-step-memory:end -->" \
      --anchor "<!-- adapter-methods:end -->"
  echo "[adapter-step-memory] README.md updated" >&2
fi
