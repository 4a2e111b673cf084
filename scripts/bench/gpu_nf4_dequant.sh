#!/usr/bin/env bash
# NF4 dequantize bandwidth on the GPU (kernels/nf4_dequantize.cu) next to a device-to-device
# copy measured in the same run. Needs a CUDA device and a build with the kernels (any build
# where nvcc was found; QLT_CUDA=ON on the GPU machine).
#   scripts/bench/gpu_nf4_dequant.sh [build-dir] [-- extra qlt_gpu_bench arguments]
#   e.g. scripts/bench/gpu_nf4_dequant.sh build -- --rows 4096 --cols 11008 --block 64 --iters 500
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$repo/build}
[[ $# -gt 0 ]] && shift
[[ ${1:-} == -- ]] && shift
cmake --build "$build" --target qlt_gpu_bench
exec "$build/tests/gpu/qlt_gpu_bench" "$@"
