#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz/ (the sanitizer build, scripts/build-asan.sh)
# and runs each one in turn with its committed seed corpus and dictionary.
#   scripts/fuzz.sh                         # every harness for 60 s
#   scripts/fuzz.sh --seconds 5             # CI's smoke run (scripts/test.sh)
#   scripts/fuzz.sh --seconds 600 --runs 1000000   # stop at whichever comes first
#   scripts/fuzz.sh --only config --seconds 300
#   scripts/fuzz.sh --no-build ... -- -jobs=2      # after --, arguments go to libFuzzer
# Options: --build-dir DIR (default build-asan), --seconds N, --runs N, --only NAME
# (repeatable; NAME as in tests/fuzz/fuzz_NAME.cpp), --no-build, --tolerate TEXT
# (repeatable: an exception whose message holds TEXT counts as a rejected input, not a
# finding, to look past a known unfixed bug in a long run; never in CI).
#
# The committed corpus (tests/fuzz/corpus/NAME/) is only read: new inputs go to a scratch
# corpus under $TMPDIR that is deleted afterwards. Inputs under tests/fuzz/regressions/NAME/
# (minimized crashes, fixed or not) are run first, once each. Findings (crash-, leak-,
# timeout-, oom- files) are kept in BUILD/fuzz-findings/NAME/, the full output in
# BUILD/fuzz-logs/NAME.log. Prints per harness: executions, exec/s, findings. Exit status 1
# when any harness has a finding; tests/fuzz/README.md says how to reproduce one.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

build="$repo/build-asan"
seconds=60
runs=""
only=()
do_build=1
extra=()
tolerate=()
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --build-dir) build=$(realpath -m "$2"); shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --only) only+=("$2"); shift 2 ;;
    --no-build) do_build=0; shift ;;
    --tolerate) tolerate+=("$2"); shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    *) echo "fuzz.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ $seconds =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --seconds takes a whole number" >&2; exit 2; }
[[ -z $runs || $runs =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --runs takes a whole number" >&2; exit 2; }

# Every harness, from the sources (the single list): tests/fuzz/fuzz_NAME.cpp.
harnesses=()
for src in tests/fuzz/fuzz_*.cpp; do
  name=$(basename "$src" .cpp)
  harnesses+=("${name#fuzz_}")
done
if ((${#only[@]})); then
  for name in "${only[@]}"; do
    [[ " ${harnesses[*]} " == *" $name "* ]] ||
      { echo "fuzz.sh: no harness '$name' (have: ${harnesses[*]})" >&2; exit 2; }
  done
  harnesses=("${only[@]}")
fi

# Longest input the fuzzer may make, per input type (a little above the largest real file
# of that kind; longer inputs only slow the search down).
max_len() {
  case $1 in
    safetensors_header) echo 16384 ;;
    jsonl_examples) echo 8192 ;;
    trainer_state) echo 16384 ;;
    bnb_quant_state) echo 1024 ;;
    dist_env) echo 256 ;;
    *) echo 4096 ;;  # config + --set, adapter_config.json, manifest.json
  esac
}

if ((do_build)); then
  echo "== building the fuzzers ($build)"
  targets=()
  for name in "${harnesses[@]}"; do targets+=("fuzz_$name"); done
  QLT_BUILD_DIR="$build" scripts/build-asan.sh "${targets[@]}"
fi

# shellcheck source=tests/sanitizer_env.sh
source tests/sanitizer_env.sh
scratch=$(mktemp -d "${TMPDIR:-/tmp}/qlt-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$build/fuzz-logs"

limit="-max_total_time=$seconds"
what="${seconds} s"
if [[ -n $runs ]]; then
  limit="$limit -runs=$runs"
  what="${seconds} s or $runs executions"
fi
if ((${#tolerate[@]})); then
  QLT_FUZZ_TOLERATE=$(IFS='|'; echo "${tolerate[*]}")
  export QLT_FUZZ_TOLERATE
  echo "== tolerating known findings (not reported): ${QLT_FUZZ_TOLERATE}"
else
  unset QLT_FUZZ_TOLERATE
fi
echo "== fuzzing ${#harnesses[@]} harnesses, ${what} each"
printf '%-22s %12s %10s  %s\n' harness executions exec/s result
failed=0
for name in "${harnesses[@]}"; do
  bin="$build/tests/fuzz/fuzz_$name"
  [[ -x $bin ]] || { echo "fuzz.sh: $bin is not built (QLT_FUZZ=ON, clang)" >&2; exit 2; }
  corpus="tests/fuzz/corpus/$name"
  dict="tests/fuzz/dict/$name.dict"
  findings="$build/fuzz-findings/$name"
  log="$build/fuzz-logs/$name.log"
  mkdir -p "$findings" "$scratch/$name"
  : >"$log"
  flags=(-max_len="$(max_len "$name")" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1
         -artifact_prefix="$findings/")
  [[ -f $dict ]] && flags+=(-dict="$dict")
  result="no findings"
  rc=0

  # Known reproducers first: each must now pass.
  regressions=(tests/fuzz/regressions/"$name"/*)
  if [[ -e ${regressions[0]} ]]; then
    "$bin" "${flags[@]}" "${regressions[@]}" >>"$log" 2>&1 || rc=$?
    ((rc == 0)) || result="FAILS a regression input in tests/fuzz/regressions/$name/ (see $log)"
  fi
  if ((rc == 0)); then
    before=$(find "$findings" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
    # shellcheck disable=SC2086  # $limit is a word list
    "$bin" "${flags[@]}" $limit ${extra[@]+"${extra[@]}"} "$scratch/$name" "$corpus" >>"$log" 2>&1 || rc=$?
    crash=$(sed -n "s/.*Test unit written to \(.*\)$/\1/p" "$log" | tail -1)
    after=$(find "$findings" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
    if ((rc != 0)); then
      result="FINDING: ${crash:-exit status $rc, no crash file} (log: $log)"
    elif ((after > before)); then
      result="FINDING: $(find "$findings" -type f -newer "$scratch" | head -1) (log: $log)"
      rc=1
    fi
  fi
  execs="-" speed="-"  # no fuzzing when a regression input fails
  if [[ $result != FAILS* ]]; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  fi
  printf '%-22s %12s %10s  %s\n' "$name" "${execs:-?}" "${speed:-?}" "$result"
  ((rc == 0)) || failed=1
done
if ((failed)); then
  echo "fuzz.sh: findings above; reproduce one with: $build/tests/fuzz/fuzz_NAME FILE (tests/fuzz/README.md)" >&2
fi
exit "$failed"
