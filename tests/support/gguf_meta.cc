#include "tests/support/gguf_meta.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"

namespace rsd::testing {
namespace {

// GGUF value types (gguf.h).
enum : uint32_t {
  kU8 = 0,
  kI8,
  kU16,
  kI16,
  kU32,
  kI32,
  kF32,
  kBool,
  kString,
  kArray,
  kU64,
  kI64,
  kF64
};

// The values the tokenizer needs: integers, floats, bools, strings and arrays of them.
struct Value {
  std::variant<int64_t, double, std::string> scalar;
  std::vector<Value> array;
  bool is_array = false;
};

class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path), in_(path, std::ios::binary) {}
  bool open() const { return in_.good(); }

  absl::Status Fail(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", what));
  }

  template <typename T>
  absl::StatusOr<T> Pod() {
    T v;
    if (!in_.read(reinterpret_cast<char*>(&v), sizeof(v))) return Fail("truncated metadata");
    return v;
  }

  absl::StatusOr<std::string> Str() {
    RSD_ASSIGN_OR_RETURN(uint64_t n, Pod<uint64_t>());
    if (n > (1u << 30)) return Fail(absl::StrCat("string of ", n, " bytes"));
    std::string s(n, '\0');
    if (n > 0 && !in_.read(s.data(), static_cast<std::streamsize>(n))) {
      return Fail("truncated string");
    }
    return s;
  }

  absl::StatusOr<Value> Read(uint32_t type, int depth = 0) {
    Value v;
    switch (type) {
      case kU8: {
        RSD_ASSIGN_OR_RETURN(uint8_t x, Pod<uint8_t>());
        v.scalar = int64_t{x};
        break;
      }
      case kI8: {
        RSD_ASSIGN_OR_RETURN(int8_t x, Pod<int8_t>());
        v.scalar = int64_t{x};
        break;
      }
      case kU16: {
        RSD_ASSIGN_OR_RETURN(uint16_t x, Pod<uint16_t>());
        v.scalar = int64_t{x};
        break;
      }
      case kI16: {
        RSD_ASSIGN_OR_RETURN(int16_t x, Pod<int16_t>());
        v.scalar = int64_t{x};
        break;
      }
      case kU32: {
        RSD_ASSIGN_OR_RETURN(uint32_t x, Pod<uint32_t>());
        v.scalar = int64_t{x};
        break;
      }
      case kI32: {
        RSD_ASSIGN_OR_RETURN(int32_t x, Pod<int32_t>());
        v.scalar = int64_t{x};
        break;
      }
      case kU64: {
        RSD_ASSIGN_OR_RETURN(uint64_t x, Pod<uint64_t>());
        v.scalar = static_cast<int64_t>(x);
        break;
      }
      case kI64: {
        RSD_ASSIGN_OR_RETURN(int64_t x, Pod<int64_t>());
        v.scalar = x;
        break;
      }
      case kF32: {
        RSD_ASSIGN_OR_RETURN(float x, Pod<float>());
        v.scalar = double{x};
        break;
      }
      case kF64: {
        RSD_ASSIGN_OR_RETURN(double x, Pod<double>());
        v.scalar = x;
        break;
      }
      case kBool: {
        RSD_ASSIGN_OR_RETURN(uint8_t x, Pod<uint8_t>());
        v.scalar = int64_t{x != 0};
        break;
      }
      case kString: {
        RSD_ASSIGN_OR_RETURN(v.scalar, Str());
        break;
      }
      case kArray: {
        if (depth > 0) return Fail("nested arrays");
        RSD_ASSIGN_OR_RETURN(uint32_t et, Pod<uint32_t>());
        RSD_ASSIGN_OR_RETURN(uint64_t n, Pod<uint64_t>());
        if (n > (1u << 26)) return Fail(absl::StrCat("array of ", n, " elements"));
        v.is_array = true;
        v.array.reserve(n);
        for (uint64_t i = 0; i < n; ++i) {
          RSD_ASSIGN_OR_RETURN(Value e, Read(et, depth + 1));
          v.array.push_back(std::move(e));
        }
        break;
      }
      default:
        return Fail(absl::StrCat("unknown value type ", type));
    }
    return v;
  }

 private:
  std::string path_;
  std::ifstream in_;
};

int64_t Int(const std::map<std::string, Value>& kv, const std::string& key, int64_t dflt) {
  auto it = kv.find(key);
  if (it == kv.end() || it->second.is_array) return dflt;
  if (const auto* i = std::get_if<int64_t>(&it->second.scalar)) return *i;
  return dflt;
}

std::string Str(const std::map<std::string, Value>& kv, const std::string& key) {
  auto it = kv.find(key);
  if (it == kv.end() || it->second.is_array) return "";
  if (const auto* s = std::get_if<std::string>(&it->second.scalar)) return *s;
  return "";
}

}  // namespace

absl::StatusOr<GgufTokenizerMeta> ReadGgufTokenizer(const std::string& path) {
  Reader r(path);
  if (!r.open()) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  RSD_ASSIGN_OR_RETURN(uint32_t magic, r.Pod<uint32_t>());
  if (std::memcmp(&magic, "GGUF", 4) != 0) return r.Fail("not a GGUF file");
  RSD_ASSIGN_OR_RETURN(uint32_t version, r.Pod<uint32_t>());
  if (version < 2 || version > 3) return r.Fail(absl::StrCat("GGUF version ", version));
  RSD_ASSIGN_OR_RETURN(uint64_t n_tensors, r.Pod<uint64_t>());
  (void)n_tensors;
  RSD_ASSIGN_OR_RETURN(uint64_t n_kv, r.Pod<uint64_t>());
  std::map<std::string, Value> kv;
  for (uint64_t i = 0; i < n_kv; ++i) {
    RSD_ASSIGN_OR_RETURN(std::string key, r.Str());
    RSD_ASSIGN_OR_RETURN(uint32_t type, r.Pod<uint32_t>());
    RSD_ASSIGN_OR_RETURN(Value v, r.Read(type));
    kv[key] = std::move(v);
  }

  GgufTokenizerMeta meta;
  TokenizerSpec& s = meta.spec;
  s.model = Str(kv, "tokenizer.ggml.model");
  s.pre = Str(kv, "tokenizer.ggml.pre");
  auto arr = [&](const char* key) -> const std::vector<Value>* {
    auto it = kv.find(key);
    return it == kv.end() || !it->second.is_array ? nullptr : &it->second.array;
  };
  const std::vector<Value>* tokens = arr("tokenizer.ggml.tokens");
  if (tokens == nullptr) return r.Fail("no tokenizer.ggml.tokens");
  for (const Value& v : *tokens) s.tokens.push_back(std::get<std::string>(v.scalar));
  if (const auto* a = arr("tokenizer.ggml.scores")) {
    for (const Value& v : *a) s.scores.push_back(static_cast<float>(std::get<double>(v.scalar)));
  }
  if (const auto* a = arr("tokenizer.ggml.token_type")) {
    for (const Value& v : *a)
      s.types.push_back(static_cast<TokenType>(std::get<int64_t>(v.scalar)));
  }
  if (const auto* a = arr("tokenizer.ggml.merges")) {
    for (const Value& v : *a) s.merges.push_back(std::get<std::string>(v.scalar));
  }
  // llama.cpp's defaults per family (llama_vocab::impl::load), then the file's keys.
  const bool spm = s.model == "llama";
  const int64_t n = static_cast<int64_t>(s.tokens.size());
  auto id = [&](const char* key, int64_t dflt) {
    const int64_t v = Int(kv, key, dflt);
    return static_cast<int32_t>(v >= 0 && v < n ? v : -1);
  };
  s.bos_id = id("tokenizer.ggml.bos_token_id", spm ? 1 : 11);
  s.eos_id = id("tokenizer.ggml.eos_token_id", spm ? 2 : 11);
  s.unk_id = id("tokenizer.ggml.unknown_token_id", spm ? 0 : -1);
  s.pad_id = id("tokenizer.ggml.padding_token_id", -1);
  s.eot_id = id("tokenizer.ggml.eot_token_id", -1);
  if (s.eot_id < 0) {
    for (const char* t :
         {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"}) {
      for (int64_t i = 0; i < n && s.eot_id < 0; ++i) {
        if (s.tokens[i] == t) s.eot_id = static_cast<int32_t>(i);
      }
    }
  }
  const bool llama3 = s.pre == "llama3" || s.pre == "llama-v3" || s.pre == "llama-bpe";
  s.add_bos = Int(kv, "tokenizer.ggml.add_bos_token", spm || llama3) != 0;
  s.add_eos = Int(kv, "tokenizer.ggml.add_eos_token", 0) != 0;
  s.add_space_prefix = Int(kv, "tokenizer.ggml.add_space_prefix", spm) != 0;
  meta.chat_template = Str(kv, "tokenizer.chat_template");
  return meta;
}

}  // namespace rsd::testing
