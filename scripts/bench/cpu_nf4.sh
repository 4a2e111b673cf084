#!/usr/bin/env bash
# CPU throughput of NF4 quantize / dequantize (the reference in src/quant/nf4.cpp) on a
# 4096x11008 bf16 weight, next to a plain copy measured in the same run.
#   scripts/bench/cpu_nf4.sh [-- extra qlt_cpu_bench arguments]
#   e.g. scripts/bench/cpu_nf4.sh -- --threads 1 --iters 3
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
[[ ${1:-} == -- ]] && shift
bash "$repo/scripts/build.sh" qlt_cpu_bench >/dev/null
exec "$repo/build/tests/qlt_cpu_bench" "$@"
