#!/usr/bin/env bash
# Configures and builds Residuum into build/ (or $RSD_BUILD_DIR). Extra arguments go to cmake;
# RSD_BUILD_TARGETS limits the build to some targets.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${RSD_BUILD_DIR:-$root/build}"
jobs="${RSD_JOBS:-2}"
cmake -S "$root" -B "$build" -G Ninja "$@" >/dev/null
# RSD_BUILD_TARGETS: only these targets (space separated; default: all).
read -r -a targets <<< "${RSD_BUILD_TARGETS:-}"
if [ "${#targets[@]}" -gt 0 ]; then
  cmake --build "$build" -j"$jobs" --target "${targets[@]}"
else
  cmake --build "$build" -j"$jobs"
fi
