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

// A piece of text to tokenize and whether special-token texts in it are parsed (see Encode).
struct TextSegment {
  std::string_view text;
  bool parse_special = false;
};

class Tokenizer {
 public:
  // INVALID_ARGUMENT if the spec is inconsistent (unknown model or pre-tokenizer, merges naming
  // unknown pieces, ids out of range, ...), naming the problem.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const TokenizerSpec& spec);
  virtual ~Tokenizer() = default;

  // Tokenizes UTF-8 `text` without BOS, exactly as llama.cpp's llama_tokenize(add_special=false).
  // Special-token texts in `text` become their ids, longest token first over the whole text:
  // control and unknown-type tokens (e.g. "<|im_start|>") only with `parse_special` (otherwise
  // they are plain text), user-defined tokens always, as llama.cpp does. SentencePiece-style models
  // put "▁" before the text and after every special token when add_space_prefix is set. Never an
  // error: invalid UTF-8 becomes one U+FFFD per invalid byte before the merges in byte-level BPE
  // models (as in llama.cpp), and <0xXX> byte tokens in SentencePiece-style models.
  virtual std::vector<int32_t> Encode(std::string_view text, bool parse_special) const = 0;

  // Tokenizes the concatenation of `segments` as one text, parsing special tokens only inside the
  // segments that ask for it. Chat templates use it so that markers and user text tokenize exactly
  // as the whole rendered prompt would, while user text can never produce a control token.
  virtual std::vector<int32_t> EncodeSegments(std::span<const TextSegment> segments) const = 0;

  // The bytes of the tokens concatenated (control and unknown-type tokens render as their text
  // only if `render_special`; user-defined ones always do). With add_space_prefix, one leading
  // space of the first token is dropped, as llama.cpp's detokenizer does; no other clean-up. So
  // Decode(Encode(s, p), true) == s for valid UTF-8 s, except in SentencePiece-style models for
  // a literal "▁" (it is their space) and for text right after a parsed special token (which
  // gained a "▁" prefix), and in byte-level BPE models whose vocabulary lacks some byte's
  // character (SmolLM2 has none for 0x16): that byte encodes to nothing, as in llama.cpp. May be
  // invalid UTF-8 when a multi-byte character is split across calls. Ids out of range contribute
  // nothing.
  virtual std::string Decode(std::span<const int32_t> ids, bool render_special) const = 0;

  // The raw bytes one token contributes (no special rendering rules, no leading-space stripping):
  // a control token gives its text; "" for an id out of range or an unused token.
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
