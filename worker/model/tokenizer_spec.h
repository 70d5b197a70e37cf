// Everything a tokenizer needs, as read from the model files (GGUF metadata or tokenizer.json).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rsd {

// ggml's token types (tokenizer.ggml.token_type).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct TokenizerSpec {
  // "gpt2": byte-level BPE with a regex pre-tokenizer named by `pre`.
  // "llama": SentencePiece-style BPE over scores, with <0xXX> byte fallback.
  std::string model;
  // Pre-tokenizer name as llama.cpp spells it (tokenizer.ggml.pre): "default", "llama3",
  // "smollm", "qwen2", "gpt2", ... Only used by "gpt2" models.
  std::string pre;
  std::vector<std::string> tokens;  // id -> piece (byte-level pieces for gpt2 models)
  std::vector<float> scores;        // may be empty for gpt2 models
  std::vector<TokenType> types;     // same length as tokens
  std::vector<std::string> merges;  // "a b" pairs in rank order (gpt2 models)
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t eot_id = -1;  // end of turn, e.g. <|im_end|> or <|eot_id|>; -1 if none
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;  // SentencePiece's "▁" before the first word
};

}  // namespace rsd
