#!/usr/bin/env bash
# Configures and builds into build/ (incremental; ccache when present). Used by demo.sh and
# test.sh; extra arguments go to the build tool (e.g. a target name).
#   QLT_BUILD_DIR=build-asan QLT_CMAKE_ARGS="-DQLT_SANITIZE=ON" scripts/build.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${QLT_BUILD_DIR:-$repo/build}
# shellcheck disable=SC2086  # QLT_CMAKE_ARGS is a word list on purpose
cmake -S "$repo" -B "$build" -G Ninja -DQLT_BUILD_TESTS=ON ${QLT_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$(nproc)" -- "$@"
