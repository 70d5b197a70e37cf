#include "tests/fuzz/fuzz_tokenizer.h"

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "storage/common/file_util.h"
#include "worker/model/gguf_file.h"

namespace rsd::fuzz {
namespace {

std::unique_ptr<Tokenizer> Load(const char* path) {
  if (path == nullptr || *path == '\0') return nullptr;
  absl::StatusOr<std::unique_ptr<MappedFile>> file = MappedFile::Open(path);
  if (!file.ok()) return nullptr;
  absl::StatusOr<gguf::File> parsed = gguf::Parse(path, (*file)->data(), (*file)->size());
  if (!parsed.ok()) return nullptr;
  absl::StatusOr<gguf::ModelInfo> info = gguf::ReadModelInfo(path, *parsed);
  if (!info.ok()) return nullptr;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Create(info->tokenizer);
  return tok.ok() ? *std::move(tok) : nullptr;
}

}  // namespace

const Tokenizer& TokenizerFromEnv(const char* variable, const char* target) {
  static const Tokenizer* tok = Load(std::getenv(variable)).release();
  if (tok == nullptr) {
    std::fprintf(stderr, "%s: no tokenizer ($%s unset or unreadable)\n", target, variable);
    std::abort();
  }
  return *tok;
}

void CheckEncoding(const Tokenizer& tok, std::string_view text,
                   const std::function<bool(bool special)>& round_trips, bool render_special) {
  for (bool special : {false, true}) {
    const std::vector<int32_t> ids = tok.Encode(text, special);
    for (int32_t id : ids) {
      if (id < 0 || id >= tok.vocab_size()) std::abort();
    }
    if (round_trips(special) && tok.Decode(ids, render_special) != text) {
      std::fprintf(stderr, "round trip failed (special=%d) for %zu bytes:", special, text.size());
      for (unsigned char c : text) std::fprintf(stderr, " %02x", c);
      std::fprintf(stderr, "\n");
      std::abort();
    }
  }
}

}  // namespace rsd::fuzz
