// GGUF container parsing, internal to worker/model: header, metadata, tensor infos and data layout.
// No model semantics here (gguf_config.cc maps metadata onto a ModelConfig and TokenizerSpec).
// Every length, count and offset is checked against the file size before use; errors are
// INVALID_ARGUMENT (malformed) or UNIMPLEMENTED (valid but unsupported) and start with the path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"
#include "worker/model/model_config.h"
#include "worker/model/tokenizer_spec.h"

namespace rsd::gguf {

enum class ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
const char* ValueTypeName(ValueType t);

// One metadata value. Scalars keep their raw little-endian bits; arrays of numbers point into the
// mapping (`raw`), arrays of strings are copied into `strings`; nested arrays keep only the count.
struct Value {
  ValueType type = ValueType::kU8;
  uint64_t bits = 0;                     // scalar payload, zero-extended
  std::string str;                       // kString
  ValueType elem_type = ValueType::kU8;  // kArray
  uint64_t count = 0;                    // kArray
  const uint8_t* raw = nullptr;          // kArray of numbers or bools
  std::vector<std::string> strings;      // kArray of strings

  bool IsInteger() const;  // any integer type (not bool)
  bool IsFloat() const;    // kF32 or kF64
  // The value of an integer (or bool) scalar; nullopt for a u64 above INT64_MAX, floats, strings
  // and arrays.
  std::optional<int64_t> AsInt() const;
  double AsDouble() const;  // float scalars, or integers converted
  // Element `i` of a numeric array, as the scalar it encodes.
  Value Element(uint64_t i) const;
};

// A tensor as the file lists it: dims innermost first (GGUF order).
struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;
  uint32_t ggml_type = 0;
  DType dtype = DType::kF32;  // the supported type it maps to
  uint64_t offset = 0;        // relative to the data section
  uint64_t nbytes = 0;
};

struct File {
  uint32_t version = 0;
  uint64_t alignment = 32;
  std::map<std::string, Value> metadata;
  std::vector<TensorInfo> tensors;
  uint64_t data_offset = 0;  // absolute offset of the data section

  const Value* Find(const std::string& key) const {
    auto it = metadata.find(key);
    return it == metadata.end() ? nullptr : &it->second;
  }
};

// ggml's name for a tensor type number ("Q4_K", ...), or "unknown".
const char* GgmlTypeName(uint32_t ggml_type);

// Parses the container and checks the tensor data layout (in bounds, aligned, not overlapping).
// `data` must outlive the result (arrays point into it).
absl::StatusOr<File> Parse(const std::string& path, const uint8_t* data, size_t size);

// What the metadata says about the model (gguf_config.cc). `vocab_size` comes from
// `<arch>.vocab_size` or the token list; the loader checks it against token_embd.
struct ModelInfo {
  ModelConfig config;
  TokenizerSpec tokenizer;
  std::string chat_template;
};
absl::StatusOr<ModelInfo> ReadModelInfo(const std::string& path, const File& file);

}  // namespace rsd::gguf
