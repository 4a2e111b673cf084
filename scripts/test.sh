#!/usr/bin/env bash
# Sets up, builds, and runs every test with ctest. Extra arguments go to ctest
# (e.g. scripts/test.sh -R safetensors). Where nvcc is installed the build is the CUDA one
# (scripts/build.sh): it compiles and links the kernels, LibTorch's CUDA libraries and tests/gpu
# on every run, and runs the CPU tests with them; tests/gpu (ctest label gpu) runs only when
# nvidia-smi sees a GPU. Then, unless QLT_SKIP_SANITIZE=1, builds the suite
# and the libFuzzer harnesses with clang, AddressSanitizer + UndefinedBehaviorSanitizer
# (build-asan/, scripts/build-asan.sh), runs the suite again, and smoke-runs each fuzzer for
# a few seconds (QLT_FUZZ_SECONDS, default 5; QLT_SKIP_FUZZ=1 skips it).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/setup.sh
# The real model of the SmolLM2 tests (tests/fixtures/smollm2); cached after the first run.
scripts/models/smollm2.sh >/dev/null
jobs=$(nproc)

echo "== build (build/)"
scripts/build.sh
echo "== tests"
gpu_filter=()
if ! nvidia-smi -L >/dev/null 2>&1; then
  gpu_filter=(-LE gpu)
  if grep -q '^QLT_CUDA:BOOL=ON' build/CMakeCache.txt; then
    echo "   (no GPU here: tests/gpu is compiled and linked but not run; scripts/gpu-check.sh on a GPU machine)"
  fi
fi
ctest --test-dir build --output-on-failure -j "$jobs" "${gpu_filter[@]}" "$@"

# The GPU machine's build up to where a GPU is needed (carried .deb packages unpacked into a
# prefix and resolved from there), so scripts/gpu-check.sh cannot rot; about 15 s once the
# .deb files are cached. QLT_SKIP_GPU_CHECK_DRY_RUN=1 skips it.
if [[ ${QLT_SKIP_GPU_CHECK_DRY_RUN:-0} != 1 ]]; then
  echo "== scripts/gpu-check.sh --dry-run"
  scripts/gpu-check.sh --dry-run
fi

if [[ ${QLT_SKIP_SANITIZE:-0} != 1 ]]; then
  echo "== build with clang, ASan + UBSan, and the fuzzers (build-asan/)"
  QLT_BUILD_DIR="$repo/build-asan" scripts/build-asan.sh
  echo "== tests under ASan + UBSan"
  # shellcheck source=tests/sanitizer_env.sh
  source tests/sanitizer_env.sh
  # The slowest end-to-end repetitions run in the plain pass only: every phase interrupted
  # three ways, the start race, and the real 135M-parameter model's forward passes (their
  # code paths run under ASan in the smaller tests). Keeps CI within its time budget.
  asan_skip='in any phase continues with --resume|started together on one output_dir'
  asan_skip+='|SmolLM2 Q4_1 GGUF: (logits|held-out)|generate on SmolLM2'
  asan_skip+='|resume after SIGKILL is bit-exact|does not exist or is a file says so, for every'
  asan_skip+='|SIGINT / SIGTERM stop after a clean checkpoint|killed before its first checkpoint'
  # Two long equivalence runs (their code runs under ASan in the shorter tests): 200 steps of
  # adamw_8bit against adamw, and 2 / 3 Gloo ranks against one process.
  asan_skip+='|200 steps follow fp32 AdamW|train on 2 and 3 Gloo ranks'
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -E "$asan_skip" "$@"
  if [[ ${QLT_SKIP_FUZZ:-0} != 1 ]]; then
    echo "== fuzzers, smoke run"
    scripts/fuzz.sh --no-build --build-dir build-asan --seconds "${QLT_FUZZ_SECONDS:-5}"
  fi
fi
