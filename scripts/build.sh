#!/usr/bin/env bash
# Configures and builds into build/ (incremental; ccache when present). Used by demo.sh and
# test.sh; extra arguments go to the build tool (e.g. a target name).
#   QLT_BUILD_DIR=build-asan QLT_CMAKE_ARGS="-DQLT_SANITIZE=ON" scripts/build.sh
# Where the CUDA toolkit is installed (nvcc), the build is the CUDA one (-DQLT_CUDA=ON: the
# kernels, LibTorch's CUDA libraries, tests/gpu), also on machines without a GPU, where every CPU
# test runs all the same (DESIGN.md §6). QLT_CUDA=0 (or =1) forces the choice.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${QLT_BUILD_DIR:-$repo/build}
cuda=${QLT_CUDA:-}
if [[ -z $cuda ]]; then
  if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then cuda=1; else cuda=0; fi
fi
if [[ $cuda == 1 ]]; then cuda_arg=-DQLT_CUDA=ON; else cuda_arg=-DQLT_CUDA=OFF; fi
# shellcheck disable=SC2086  # QLT_CMAKE_ARGS is a word list on purpose
cmake -S "$repo" -B "$build" -G Ninja -DQLT_BUILD_TESTS=ON "$cuda_arg" ${QLT_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$(nproc)" -- "$@"
