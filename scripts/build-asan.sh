#!/usr/bin/env bash
# Configures and builds the sanitizer build: clang, AddressSanitizer + UndefinedBehaviorSanitizer
# and libFuzzer coverage on everything, plus the fuzzers of tests/fuzz/ (QLT_FUZZ=ON). One build
# serves the ASan test run and the fuzzers (scripts/test.sh, scripts/fuzz.sh): CI cannot afford a
# third full build. Extra arguments go to the build tool (e.g. a target name: qlt_fuzzers).
#   QLT_BUILD_DIR=build-asan (default) scripts/build-asan.sh [target...]
# A folder configured earlier with another compiler (gcc, before the fuzzers) cannot switch
# compiler in place: it is wiped and configured afresh.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${QLT_BUILD_DIR:-$repo/build-asan}
cache="$build/CMakeCache.txt"
if [[ -f $cache ]]; then
  compiler=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$cache")
  if [[ $(basename "${compiler:-none}") != clang++* ]]; then
    echo "[build-asan] $build was configured with ${compiler:-an unknown compiler}, not clang++: wiping it"
    rm -rf "$build"
  fi
fi
# The kernels were compiled (nvcc, when present) by the plain build; not again here.
QLT_CUDA=0 QLT_BUILD_DIR="$build" \
  QLT_CMAKE_ARGS="--no-warn-unused-cli -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DQLT_SANITIZE=ON -DQLT_FUZZ=ON -DQLT_COMPILE_KERNELS=OFF ${QLT_CMAKE_ARGS:-}" \
  "$repo/scripts/build.sh" "$@"
