#!/usr/bin/env bash
# The whole test suite under AddressSanitizer and UndefinedBehaviorSanitizer (issue #14): every
# test ctest knows, in a tree built with RSD_SANITIZE — the unit tests, the real-model tests, and
# the cluster tests with their rsd-router, rsd-worker, rsd-run and rsdctl processes, which are
# built in the same tree and so run instrumented too.
#
# Reports from every process go to files, not only to the failing test's output: a cluster test
# kills and restarts workers, and a worker that aborted on a report would look like one more kill.
# Any report fails the run. Leaks are checked in every process that exits by itself.
#
# Left out: check_sizes and k8s_validate (Python over the source tree: nothing compiled to check).
# BoundedRss and Overload run, without their bounds on RSS, which ASan's shadow memory and its
# quarantine of freed blocks raise by design (tests/support/test_util.h: kAddressSanitizer).
# Usage: tools/asan.sh   (environment: RSD_SMOLLM2, RSD_JOBS, RSD_ASAN_EXCLUDE: a ctest -E regex)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build-asan"
export RSD_SMOLLM2="${RSD_SMOLLM2:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}"

echo "== ASan + UBSan build (every test and the servers) =="
RSD_BUILD_DIR="$build" "$root/tools/build.sh" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRSD_SANITIZE=ON -DRSD_TESTS_CORE_ONLY=OFF -DRSD_BUILD_BENCH=OFF -DRSD_PYENV="$root/build/pyenv"

reports="$build/reports"
rm -rf "$reports" && mkdir -p "$reports"
export ASAN_OPTIONS="detect_leaks=1 log_path=$reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1 log_path=$reports/ubsan"
exclude="${RSD_ASAN_EXCLUDE:-^(check_sizes.*|k8s_validate)$}"
echo "== every test under ASan + UBSan (left out: $exclude) =="
status=0
(cd "$build" && ctest --output-on-failure -j"${RSD_JOBS:-2}" --timeout 1200 -E "$exclude") ||
  status=1
if compgen -G "$reports/*san.*" >/dev/null; then
  echo "ASan/UBSan reports:"
  for f in "$reports"/*san.*; do echo "--- $f"; head -n 80 "$f"; done
  exit 1
fi
[ "$status" = 0 ] && echo "asan: every test passed, no report"
exit "$status"
