#!/usr/bin/env bash
# Installs every system dependency Residuum needs on a fresh Debian 12 machine.
# Idempotent: safe to run again. Needs root (or sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PKGS=(
  build-essential cmake ninja-build ccache pkg-config git python3 python3-pip python3-venv unzip curl
  openssl clang-14 libclang-rt-14-dev patch xz-utils
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  librocksdb-dev libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libxxhash-dev libzstd-dev liblz4-dev libsnappy-dev
  libbz2-dev zlib1g-dev libssl-dev libcpp-httplib-dev prometheus-cpp-dev libspdlog-dev
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Python packages the tests use: lizard finds C++ function extents for tools/check_sizes.py.
PY_PKGS=(lizard==1.24.3)
if ! python3 -c 'import lizard' 2>/dev/null; then
  python3 -m pip install --quiet "${PY_PKGS[@]}"
fi
