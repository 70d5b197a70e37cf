// Tokenizers built from the model files: byte-level BPE with the model's pre-tokenizer ("gpt2")
// and SentencePiece-style BPE with byte fallback ("llama"). Immutable after Create; thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/tokenizer_spec.h"

namespace rsd {

class Tokenizer {
 public:
  // INVALID_ARGUMENT if the spec is inconsistent (unknown model or pre-tokenizer, merges naming
  // unknown pieces, ids out of range, ...), naming the problem.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const TokenizerSpec& spec);
  virtual ~Tokenizer() = default;

  // Tokenizes UTF-8 `text` without BOS. With `parse_special`, control/user-defined token texts
  // (e.g. "<|im_start|>") in `text` become their ids; without it they are tokenized as plain text.
  // Invalid UTF-8 is tokenized byte by byte (never an error).
  virtual std::vector<int32_t> Encode(std::string_view text, bool parse_special) const = 0;

  // The bytes of the tokens concatenated (control tokens render as their text only if
  // `render_special`). May be invalid UTF-8 when a multi-byte character is split across calls.
  virtual std::string Decode(std::span<const int32_t> ids, bool render_special) const = 0;

  // The raw bytes one token contributes (no special rendering rules, no leading-space stripping).
  virtual std::string TokenBytes(int32_t id) const = 0;

  virtual const TokenizerSpec& spec() const = 0;
  int32_t vocab_size() const { return static_cast<int32_t>(spec().tokens.size()); }
  bool IsControl(int32_t id) const;
};

// Parses a Hugging Face tokenizer.json (plus tokenizer_config.json's special-token fields if
// given; may be empty) into a spec. INVALID_ARGUMENT names `path` and the problem.
absl::StatusOr<TokenizerSpec> ParseHfTokenizerJson(const std::string& path,
                                                   const std::string& tokenizer_json,
                                                   const std::string& tokenizer_config_json);

}  // namespace rsd
