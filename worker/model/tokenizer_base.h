// What both tokenizer families share: the vocabulary index, special-token partitioning of the
// input (llama.cpp's tokenizer_st_partition), and decoding from per-token byte strings.
// Internal to worker/model; users see only Tokenizer.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "worker/model/tokenizer.h"

namespace rsd {

class TokenizerBase : public Tokenizer {
 public:
  // `spec` must have passed ValidateSpec (ids in range, types sized like tokens).
  explicit TokenizerBase(TokenizerSpec spec);

  std::vector<int32_t> Encode(std::string_view text, bool parse_special) const override;
  std::vector<int32_t> EncodeSegments(std::span<const TextSegment> segments) const override;
  std::string Decode(std::span<const int32_t> ids, bool render_special) const override;
  std::string TokenBytes(int32_t id) const override;
  const TokenizerSpec& spec() const override { return spec_; }

 protected:
  // Appends the tokens of `text`, which holds no special tokens. `after_special` is true when the
  // text starts the input or follows a special token (where SentencePiece adds its space prefix).
  virtual void EncodeText(std::string_view text, bool after_special,
                          std::vector<int32_t>* out) const = 0;

  // The id of the token whose text is exactly `text`, or -1. Like llama.cpp, a text listed twice
  // maps to its last id.
  int32_t TextToId(std::string_view text) const;

  // Must be filled by the subclass's constructor: the bytes each token decodes to.
  std::vector<std::string> pieces_;

 private:
  struct Fragment {
    int32_t token;  // -1 for raw text
    size_t begin;   // raw text: [begin, end) of the concatenated input
    size_t end;
  };
  // Splits the raw fragments of one segment around occurrences of special tokens.
  void Partition(std::string_view text, bool parse_special, std::vector<Fragment>* frags) const;

  TokenizerSpec spec_;
  absl::flat_hash_map<std::string, int32_t> text_to_id_;
  // Control, user-defined and unknown-type tokens, longest text first (ties by id).
  std::vector<int32_t> specials_;
};

// True for the texts llama.cpp always treats as end-of-generation control tokens ("<|im_end|>",
// "<|eot_id|>", "<|endoftext|>", ...); such tokens are made control tokens whatever their type.
bool IsEndOfGenerationText(std::string_view text);

// Checks what every tokenizer relies on: ids and array sizes. INVALID_ARGUMENT names the problem.
absl::Status ValidateSpec(const TokenizerSpec& spec);

// The two families; `spec` must have passed ValidateSpec.
absl::StatusOr<std::unique_ptr<Tokenizer>> CreateBpeTokenizer(TokenizerSpec spec);
absl::StatusOr<std::unique_ptr<Tokenizer>> CreateSpmTokenizer(TokenizerSpec spec);

}  // namespace rsd
