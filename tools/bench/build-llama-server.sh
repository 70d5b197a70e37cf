#!/usr/bin/env bash
# Builds llama.cpp's own server (llama-server) and benchmarks (llama-bench, llama-batched-bench),
# the peers of tools/bench/serving_bench.sh and tools/bench/engine_bench.py, from the llama.cpp
# sources vendored in the PyPI llama-cpp-python sdist. Prints the server's path on the last line
# of stdout (the benchmarks sit beside it); idempotent (what is built is reused).
#
# Everything lives outside the repository, in RSD_LLAMA_CACHE (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/residuum/llama-server). RSD_LLAMA_CPP_PYTHON_VERSION picks the
# sdist (default 0.3.36), RSD_LLAMA_JOBS the build parallelism (default 2).
#
# ISA: by default GGML_NATIVE=ON, what llama.cpp's users run (every instruction set of this
# machine: AVX-512, VNNI, BF16 where present). RSD_LLAMA_NATIVE=0 builds the older comparison
# instead: AVX, AVX2, FMA, F16C and BMI2 only (into a separate build directory).
set -euo pipefail
version="${RSD_LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${RSD_LLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/residuum/llama-server}"
jobs="${RSD_LLAMA_JOBS:-2}"
native="${RSD_LLAMA_NATIVE:-1}"
src="$cache/llama-cpp-python-$version"
if [ "$native" = 1 ]; then
  build="$cache/build-$version-native"
  isa=(-DGGML_NATIVE=ON)
else
  build="$cache/build-$version-avx2"
  isa=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
    -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF)
fi

find_binary() {
  for b in "$build/bin/llama-server" "$build/tools/server/llama-server" \
    "$build/examples/server/llama-server"; do
    if [ -x "$b" ] && [ -x "$(dirname "$b")/llama-bench" ] &&
      [ -x "$(dirname "$b")/llama-batched-bench" ]; then
      echo "$b"
      return 0
    fi
  done
  return 1
}

if bin="$(find_binary)"; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
if [ ! -f "$src/vendor/llama.cpp/CMakeLists.txt" ]; then
  echo "== downloading the llama-cpp-python $version sdist ==" >&2
  tmp="$(mktemp -d "$cache/download.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$tmp" \
    "llama-cpp-python==$version" >&2
  sdist="$(find "$tmp" -maxdepth 1 -name 'llama[_-]cpp[_-]python-*.tar.gz' | head -n 1)"
  [ -n "$sdist" ] || { echo "no sdist downloaded into $tmp" >&2; exit 1; }
  tar -xzf "$sdist" -C "$tmp"
  unpacked="$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
  rm -rf "$src"
  mv "$unpacked" "$src"
fi

llama="$src/vendor/llama.cpp"
echo "== configuring llama-server ($llama) ==" >&2
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$llama" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMON=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  "${isa[@]}" -DGGML_OPENMP=ON >&2
echo "== building llama-server, llama-bench and llama-batched-bench (-j$jobs) ==" >&2
cmake --build "$build" --target llama-server llama-bench llama-batched-bench -j "$jobs" >&2
find_binary || { echo "llama-server was not built under $build" >&2; exit 1; }
