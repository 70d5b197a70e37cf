// Pre-tokenizers of byte-level BPE models: the regex splits that cut text into words before the
// merges run, written by hand over code point classes (std::regex is slow and has no \p{L}).
// Each one reproduces the split llama.cpp makes for the pre-tokenizer name stored in the model
// (tokenizer.ggml.pre); see pretokenizer.cc for the regexes.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace rsd {

enum class PreTokenizerKind {
  kDefault,  // punctuation runs, then GPT-2's regex, then digit runs, then 3-digit groups
  kGpt2,     // GPT-2's regex
  kSmollm,   // every digit alone, then GPT-2's regex (StarCoder, SmolLM)
  kLlama3,   // Llama 3's regex (digits in groups of up to 3)
  kQwen2,    // Llama 3's regex with every digit alone
};

struct PreTokenizer {
  PreTokenizerKind kind = PreTokenizerKind::kDefault;
  // A word that is a whole token is emitted as that token without running the merges (llama.cpp's
  // ignore_merges, set for the Llama 3 family).
  bool ignore_merges = false;
};

// Maps a tokenizer.ggml.pre name (llama.cpp's spelling) to its pre-tokenizer; "" means "default",
// as in llama.cpp. INVALID_ARGUMENT for a name we do not implement.
absl::StatusOr<PreTokenizer> PreTokenizerFromName(std::string_view name);

// Splits `cpts` into words and returns each word's length in code points; the lengths sum to
// cpts.size() and no length is 0.
std::vector<uint32_t> PreTokenize(PreTokenizerKind kind, std::span<const uint32_t> cpts);

}  // namespace rsd
