#!/usr/bin/env bash
# Sets up, builds, and runs every test with ctest. Extra arguments go to ctest
# (e.g. scripts/test.sh -R safetensors). Then, unless QLT_SKIP_SANITIZE=1, builds the suite
# with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/) and runs it again.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/setup.sh
jobs=$(nproc)

echo "== build (build/)"
scripts/build.sh
echo "== tests"
ctest --test-dir build --output-on-failure -j "$jobs" "$@"

if [[ ${QLT_SKIP_SANITIZE:-0} != 1 ]]; then
  echo "== build with ASan + UBSan (build-asan/)"
  # The kernels were compiled (nvcc, when present) by the plain build; not again here.
  QLT_BUILD_DIR="$repo/build-asan" QLT_CMAKE_ARGS="-DQLT_SANITIZE=ON -DQLT_COMPILE_KERNELS=OFF" \
    scripts/build.sh
  echo "== tests under ASan + UBSan"
  # shellcheck source=tests/sanitizer_env.sh
  source tests/sanitizer_env.sh
  ctest --test-dir build-asan --output-on-failure -j "$jobs" "$@"
fi
