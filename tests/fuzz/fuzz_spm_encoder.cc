// The SentencePiece encoder (Llama 2 style, byte fallback) of a real model (stories260K, from
// $RSD_STORIES260K) on arbitrary bytes, with its documented property as the oracle: any input
// encodes to ids inside the vocabulary, and valid UTF-8 without a literal U+2581 (SentencePiece's
// space, which decodes as " " by design) decodes back to itself, with and without special-token
// parsing. A violation aborts (a crash for libFuzzer, a failed replay test).
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_tokenizer.h"
#include "worker/model/unicode.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const rsd::Tokenizer& tok = rsd::fuzz::TokenizerFromEnv("RSD_STORIES260K", "fuzz_spm_encoder");
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool round_trips =
      rsd::IsValidUtf8(text) && text.find("\xE2\x96\x81") == std::string_view::npos;
  // With special-token parsing, text spelling a special token becomes that token, which
  // decodes to nothing: only the plain encoding must round-trip whole.
  rsd::fuzz::CheckEncoding(
      tok, text, [&](bool special) { return !special && round_trips; }, /*render_special=*/false);
  return 0;
}

namespace rsd::fuzz {
std::vector<std::string> FuzzSeeds() {
  return {"Once upon a time, there was a little girl named Lily.",
          "  two leading spaces, a tab\tand\r\nCRLF  ", "ça va? 日本語 🙂 \x01\x7f",
          "<s> not a special token in plain text </s>", std::string("\xff\xfe invalid \xc3", 13)};
}
}  // namespace rsd::fuzz
