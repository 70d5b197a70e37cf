#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers (tests/fuzz, issue #14) with clang's libFuzzer under
# ASan and UBSan: builds the fuzz targets in build-fuzz/, seeds each corpus with the target's
# built-in valid inputs, and runs each target for SECONDS (default 60). A crash leaves its input in
# build-fuzz/crashes/<target>/ and fails the script; add that input to tests/fuzz/corpus/<target>/
# so the replay tests keep it. Usage: tools/fuzz.sh [SECONDS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-60}"
out="$root/build-fuzz"
targets=(fuzz_state_codec fuzz_gguf fuzz_hf_json fuzz_bpe_encoder fuzz_spm_encoder
  fuzz_chat_template fuzz_state_stream fuzz_router_codecs)
# The tokenizer targets use the default model's vocabulary (tools/fetch-model.sh) and the
# SentencePiece one of stories260K (beside the checkout, as the tests find it).
export RSD_SMOLLM2="${RSD_SMOLLM2:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
export RSD_STORIES260K="${RSD_STORIES260K:-$root/../shared/models/stories260K.gguf}"
mkdir -p "$out"
cmake -S "$root" -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DRSD_FUZZ=ON -DRSD_TESTS_CORE_ONLY=OFF -DRSD_BUILD_BENCH=OFF > "$out/configure.log"
ninja -C "$out" -j2 "${targets[@]}"
# One target's run: seeds, then libFuzzer for $seconds; its output goes to $out/logs/<target>.log.
fuzz_one() {
  local t="$1" corpus="$out/corpus/$1" crashes="$out/crashes/$1"
  mkdir -p "$corpus" "$crashes"
  # The seeds: the replay build of the same target writes them.
  "$root/build/tests/fuzz/$t" --write-seeds "$corpus" || return 1
  if [ -d "$root/tests/fuzz/corpus/$t" ]; then cp "$root/tests/fuzz/corpus/$t"/* "$corpus"/; fi
  "$out/tests/fuzz/$t" "$corpus" -max_total_time="$seconds" -artifact_prefix="$crashes/" \
    -print_final_stats=1 -rss_limit_mb=2048 > "$out/logs/$t.log" 2>&1
}
# Two lanes (libFuzzer runs one thread; the machines here have two cores), each target still
# fuzzed for $seconds; a lane goes on after a crash, and any crash fails the script.
rm -rf "$out/logs" && mkdir -p "$out/logs"
lane() {
  local status=0 i
  for ((i = $1; i < ${#targets[@]}; i += 2)); do fuzz_one "${targets[$i]}" || status=1; done
  return "$status"
}
lane 0 & first=$!
lane 1 & second=$!
status=0
wait "$first" || status=1
wait "$second" || status=1
for t in "${targets[@]}"; do
  echo "== $t: ${seconds}s"
  tail -n 12 "$out/logs/$t.log"
done
if [ "$status" != 0 ]; then
  echo "fuzz: a target crashed or failed (inputs in $out/crashes/)" >&2
  exit 1
fi
echo "fuzz: no crash in ${#targets[@]} targets x ${seconds}s"
