#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh Debian 12 machine, fetches the
# default model, builds, runs every test under AddressSanitizer and UndefinedBehaviorSanitizer (the
# cluster's router and worker processes instrumented too: tools/asan.sh), the concurrent tests (the
# kernels' thread pool, the scheduler, sessions, the router's core and services, the worker's
# service, part of the cluster suite) under ThreadSanitizer with an instrumented Abseil
# (tools/tsan.sh), every test again in the plain build, and fuzzes the parsers with libFuzzer for a
# bounded time (RSD_FUZZ_SECONDS a target, default 30).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/tools/install-deps.sh"
RSD_PYENV="$root/build/pyenv" "$root/tools/pyenv.sh"
"$root/tools/fetch-model.sh" >/dev/null
export RSD_SMOLLM2="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"

echo "== build (RelWithDebInfo) =="
RSD_BUILD_DIR="$root/build" "$root/tools/build.sh" -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "== every test under ASan + UBSan (tools/asan.sh) =="
"$root/tools/asan.sh"
echo "== under ThreadSanitizer (tools/tsan.sh) =="
"$root/tools/tsan.sh"
echo "== all tests =="
cd "$root/build"
ctest --output-on-failure -j2 --timeout 1200
echo "== fuzzing (libFuzzer + ASan/UBSan, ${RSD_FUZZ_SECONDS:-30} s a target) =="
"$root/tools/fuzz.sh" "${RSD_FUZZ_SECONDS:-30}"
