#!/usr/bin/env bash
# Configures and builds Residuum into build/ (or $RSD_BUILD_DIR). Extra arguments go to cmake.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${RSD_BUILD_DIR:-$root/build}"
jobs="${RSD_JOBS:-2}"
cmake -S "$root" -B "$build" -G Ninja "$@" >/dev/null
cmake --build "$build" -j"$jobs"
