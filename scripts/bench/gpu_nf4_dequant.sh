#!/usr/bin/env bash
# Kernel bandwidth on the GPU (qlt_gpu_bench): NF4 dequantize (kernels/nf4_dequantize.cu, the
# default), INT4 dequantize (kernels/int4_dequantize.cu) and the fused 8-bit AdamW step
# (kernels/adamw_8bit.cu), each next to a device-to-device copy of the same bytes measured in
# the same run. Needs a CUDA device and a build with the kernels (any build where nvcc was
# found; QLT_CUDA=ON on the GPU machine).
#   scripts/bench/gpu_nf4_dequant.sh [build-dir] [-- extra qlt_gpu_bench arguments]
#   e.g. scripts/bench/gpu_nf4_dequant.sh build -- --rows 4096 --cols 11008 --block 64 --iters 500
#        scripts/bench/gpu_nf4_dequant.sh build -- --kernel all   (nf4, int4, adamw8bit)
#   qlt_gpu_bench arguments: --kernel nf4|int4|adamw8bit|all --rows R --cols C --block B
#                            --group G (INT4: 32, 64, 128) --iters N
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$repo/build}
[[ $# -gt 0 ]] && shift
[[ ${1:-} == -- ]] && shift
cmake --build "$build" --target qlt_gpu_bench
exec "$build/tests/gpu/qlt_gpu_bench" "$@"
