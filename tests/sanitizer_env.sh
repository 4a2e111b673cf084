# Environment for running the suite built with -DQLT_SANITIZE=ON (sourced by scripts/test.sh).
# Any ASan or UBSan report fails the test that triggered it (UBSan is built with
# -fno-sanitize-recover). LibTorch itself is not instrumented; no suppressions are needed.
export ASAN_OPTIONS="abort_on_error=0:halt_on_error=1:detect_leaks=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
