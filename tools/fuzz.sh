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
for t in "${targets[@]}"; do
  corpus="$out/corpus/$t"
  crashes="$out/crashes/$t"
  mkdir -p "$corpus" "$crashes"
  # The seeds: the replay build of the same target writes them.
  "$root/build/tests/fuzz/$t" --write-seeds "$corpus"
  [ -d "$root/tests/fuzz/corpus/$t" ] && cp "$root/tests/fuzz/corpus/$t"/* "$corpus"/ 2>/dev/null || true
  echo "== $t: ${seconds}s"
  "$out/tests/fuzz/$t" "$corpus" -max_total_time="$seconds" -artifact_prefix="$crashes/" \
    -print_final_stats=1 -rss_limit_mb=2048 2>&1 | tail -n 12
done
echo "fuzz: no crash in ${#targets[@]} targets x ${seconds}s"
