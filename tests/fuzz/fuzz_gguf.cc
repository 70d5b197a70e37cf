// The GGUF reader (worker/model/gguf_file.h): container, metadata and tensor layout of a model
// file, then what the metadata says about the model.
#include "tests/fuzz/fuzz.h"
#include "worker/model/gguf_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<rsd::gguf::File> file = rsd::gguf::Parse("fuzz.gguf", data, size);
  if (file.ok()) (void)rsd::gguf::ReadModelInfo("fuzz.gguf", *file);
  return 0;
}

namespace rsd::fuzz {
namespace {
void U32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void U64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
void Str(std::string& s, const std::string& v) {
  U64(s, v.size());
  s += v;
}
}  // namespace

// A GGUF v3 file with a few metadata pairs (string, u32, an array of strings) and one F32
// tensor.
std::vector<std::string> FuzzSeeds() {
  std::string s = "GGUF";
  U32(s, 3);
  U64(s, 1);  // tensors
  U64(s, 4);  // metadata pairs
  Str(s, "general.architecture");
  U32(s, 8);  // string
  Str(s, "llama");
  Str(s, "llama.context_length");
  U32(s, 4);  // u32
  U32(s, 64);
  Str(s, "general.alignment");
  U32(s, 4);
  U32(s, 32);
  Str(s, "tokenizer.ggml.tokens");
  U32(s, 9);  // array
  U32(s, 8);  // of strings
  U64(s, 2);
  Str(s, "a");
  Str(s, "b");
  Str(s, "token_embd.weight");
  U32(s, 2);  // dims
  U64(s, 4);
  U64(s, 2);
  U32(s, 0);  // F32
  U64(s, 0);  // offset
  while (s.size() % 32 != 0) s.push_back('\0');
  s.append(4 * 2 * 4, '\0');
  return {s};
}
}  // namespace rsd::fuzz
