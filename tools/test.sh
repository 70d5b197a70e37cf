#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh Debian 12 machine, fetches the
# default model, builds, runs every test with ctest, then runs the core unit tests and the services'
# unit tests again under AddressSanitizer and UndefinedBehaviorSanitizer, the concurrent tests (the kernels' thread pool,
# the scheduler, sessions, the router's core and services, the worker's service, part of the
# cluster suite) under ThreadSanitizer with an instrumented Abseil (tools/tsan.sh), and fuzzes the
# parsers with libFuzzer for a bounded time (RSD_FUZZ_SECONDS a target, default 30).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/tools/install-deps.sh"
RSD_PYENV="$root/build/pyenv" "$root/tools/pyenv.sh"
"$root/tools/fetch-model.sh" >/dev/null
export RSD_SMOLLM2="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"

echo "== build (RelWithDebInfo) =="
RSD_BUILD_DIR="$root/build" "$root/tools/build.sh" -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "== sanitizer build (ASan + UBSan, core unit tests) =="
RSD_BUILD_DIR="$root/build-asan" "$root/tools/build.sh" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRSD_SANITIZE=ON -DRSD_TESTS_CORE_ONLY=ON -DRSD_BUILD_BENCH=OFF

echo "== core unit tests under ASan + UBSan =="
(cd "$root/build-asan" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j2 --timeout 1200)
# The same tree with the gRPC layers added: the unit tests of what parses bytes from the network
# (state streams, the journal and router codecs, OpenAI requests, the router's and the worker's
# services against hostile imports, bad requests and cut streams). ASan needs no instrumented
# gRPC; the core build above stays as it was (changing RSD_TESTS_CORE_ONLY recompiles nothing).
echo "== the services' unit tests under ASan + UBSan =="
services=(tests/proto/state_stream_test tests/router/router_core_test
  tests/router/router_service_test tests/worker/service/worker_service_test)
RSD_BUILD_DIR="$root/build-asan" RSD_BUILD_TARGETS="${services[*]##*/}" "$root/tools/build.sh" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRSD_SANITIZE=ON -DRSD_TESTS_CORE_ONLY=OFF \
  -DRSD_BUILD_BENCH=OFF
for t in "${services[@]}"; do
  log="$root/build-asan/${t##*/}.log"
  if ! (cd "$root/build-asan" && RSD_SOURCE_DIR="$root" ASAN_OPTIONS=detect_leaks=1 \
      UBSAN_OPTIONS=print_stacktrace=1 "./$t" >"$log" 2>&1); then
    echo "${t##*/}: FAILED under ASan + UBSan"; tail -n 60 "$log"; exit 1
  fi
  echo "${t##*/}: $(grep -E '^\[  PASSED' "$log")"
done
echo "== under ThreadSanitizer (tools/tsan.sh) =="
"$root/tools/tsan.sh"
echo "== all tests =="
cd "$root/build"
ctest --output-on-failure -j2 --timeout 1200
echo "== fuzzing (libFuzzer + ASan/UBSan, ${RSD_FUZZ_SECONDS:-30} s a target) =="
"$root/tools/fuzz.sh" "${RSD_FUZZ_SECONDS:-30}"
