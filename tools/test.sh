#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh Debian 12 machine, fetches the
# default model, builds, runs every test with ctest, then runs the core unit tests again under
# AddressSanitizer and UndefinedBehaviorSanitizer, the concurrent core (the kernels' thread pool,
# the scheduler's compute thread, streams and cancellation) under ThreadSanitizer, and fuzzes the
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
echo "== ThreadSanitizer build (the kernels' thread pool, the scheduler) =="
RSD_BUILD_DIR="$root/build-tsan" RSD_BUILD_TARGETS="kernels_test scheduler_test" \
  "$root/tools/build.sh" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRSD_TSAN=ON \
  -DRSD_TESTS_CORE_ONLY=ON -DRSD_BUILD_BENCH=OFF
echo "== under ThreadSanitizer =="
# Not here: cuda-emu's fibers (swapcontext, which TSan does not follow) and code synchronized with
# absl::Mutex (Debian's Abseil is not instrumented, so TSan sees none of its locks, nor the
# reference counts of absl::Status: a Status crossing threads is copied, scheduler.cc's Fail).
export TSAN_OPTIONS="halt_on_error=1 allocator_may_return_null=1"
"$root/build-tsan/tests/kernels_test"
"$root/build-tsan/tests/worker/engine/scheduler_test" --gtest_filter='-*OutOfDevice*'
unset TSAN_OPTIONS
echo "== all tests =="
cd "$root/build"
ctest --output-on-failure -j2 --timeout 1200
echo "== fuzzing (libFuzzer + ASan/UBSan, ${RSD_FUZZ_SECONDS:-30} s a target) =="
"$root/tools/fuzz.sh" "${RSD_FUZZ_SECONDS:-30}"
