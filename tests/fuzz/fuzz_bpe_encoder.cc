// The byte-level BPE encoder of the default model (SmolLM2's tokenizer) on arbitrary bytes, with
// its documented property as the oracle: for valid UTF-8 whose every code point round-trips alone,
// Decode(Encode(s)) == s (with and without special-token parsing); any input encodes to ids inside
// the vocabulary. (A byte whose character has no token in the vocabulary, such as 0x16 in
// SmolLM2's, encodes to nothing, as in llama.cpp: found by this target.) A violation aborts (a
// crash for libFuzzer, a failed replay test). The model comes from $RSD_SMOLLM2; without it the
// target says so and the replay test fails rather than passing without checking anything.
#include <cstdio>
#include <cstdlib>

#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_tokenizer.h"
#include "worker/model/unicode.h"

namespace {

// Whether each code point of valid UTF-8 `text` encodes alone to something that decodes back to it.
bool EachCodePointRoundTrips(const rsd::Tokenizer& tok, std::string_view text) {
  for (uint32_t c : rsd::DecodeUtf8Lax(text)) {
    std::string one;
    rsd::AppendUtf8(c, &one);
    if (tok.Decode(tok.Encode(one, false), true) != one) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const rsd::Tokenizer& tok = rsd::fuzz::TokenizerFromEnv("RSD_SMOLLM2", "fuzz_bpe_encoder");
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool round_trips = rsd::IsValidUtf8(text) && EachCodePointRoundTrips(tok, text);
  rsd::fuzz::CheckEncoding(
      tok, text, [&](bool) { return round_trips; }, /*render_special=*/true);
  return 0;
}

namespace rsd::fuzz {
std::vector<std::string> FuzzSeeds() {
  return {"Hello, world! 123 4567 — ça va? 日本語 🙂",
          "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
          "  leading spaces\ttabs\r\nand CRLF  ", "don't won't I'll they're WE'VE",
          std::string("\xff\xfe invalid \xc3", 13)};
}
}  // namespace rsd::fuzz
