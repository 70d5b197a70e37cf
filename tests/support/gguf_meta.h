// A minimal, test-only reader of the tokenizer metadata in a GGUF file, so that tokenizer tests
// can build a TokenizerSpec from a real model independently of the engine's GGUF loader. It maps
// the keys as llama.cpp does (defaults included: "llama" models get add_bos and add_space_prefix
// unless the file says otherwise).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "worker/model/tokenizer_spec.h"

namespace rsd::testing {

struct GgufTokenizerMeta {
  TokenizerSpec spec;
  std::string chat_template;  // tokenizer.chat_template, "" if absent
};

// INVALID_ARGUMENT for a malformed file, NOT_FOUND if it cannot be opened.
absl::StatusOr<GgufTokenizerMeta> ReadGgufTokenizer(const std::string& path);

}  // namespace rsd::testing
