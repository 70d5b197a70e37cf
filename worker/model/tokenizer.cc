#include "worker/model/tokenizer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"
#include "worker/model/tokenizer_base.h"

namespace rsd {

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(const TokenizerSpec& spec) {
  TokenizerSpec s = spec;
  // As llama.cpp: a model file without token types has only normal tokens.
  if (s.types.empty()) s.types.assign(s.tokens.size(), TokenType::kNormal);
  RSD_RETURN_IF_ERROR(ValidateSpec(s));
  if (s.model == "gpt2") return CreateBpeTokenizer(std::move(s));
  if (s.model == "llama") return CreateSpmTokenizer(std::move(s));
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported tokenizer model \"", s.model, "\" (supported: gpt2, llama)"));
}

bool Tokenizer::IsControl(int32_t id) const {
  return id >= 0 && id < vocab_size() && spec().types[id] == TokenType::kControl;
}

}  // namespace rsd
