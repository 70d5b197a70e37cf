// A GGUF v3 writer with full control over every field, for writing synthetic models and for
// breaking them on purpose in tests (wrong types, bad counts, truncation at a known offset).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kernels/dtype.h"

namespace rsd::testing {

// gguf_type values.
enum class GgufType : uint32_t {
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

// ggml_type ids of our dtypes: F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 8, BF16 30.
uint32_t GgmlTypeId(DType t);

// Where things landed in a built file (byte offsets from the start).
struct GgufLayout {
  static constexpr size_t kVersionOffset = 4;
  static constexpr size_t kTensorCountOffset = 8;
  static constexpr size_t kKvCountOffset = 16;
  static constexpr size_t kMetadataBegin = 24;
  size_t tensor_infos_begin = 0;
  size_t data_begin = 0;
  struct Kv {
    size_t key_begin;    // the key's u64 length
    size_t type_offset;  // the u32 value type
    size_t value_begin;  // the value (for arrays: the u32 element type)
  };
  std::map<std::string, Kv> kvs;
  struct Tensor {
    size_t info_begin;     // the name's u64 length
    size_t dims_offset;    // the u32 dimension count
    size_t type_offset;    // the u32 ggml type
    size_t offset_offset;  // the u64 data offset
    size_t data_begin;     // absolute offset of the data
  };
  std::map<std::string, Tensor> tensors;
};

class GgufBuilder {
 public:
  struct Tensor {
    std::string name;
    uint32_t ggml_type = 0;
    std::vector<uint64_t> dims;  // innermost first, as GGUF stores them
    std::string data;
  };

  // Metadata is written in insertion order; setting an existing key replaces its value in place.
  void SetU32(const std::string& key, uint32_t v);
  void SetI32(const std::string& key, int32_t v);
  void SetU64(const std::string& key, uint64_t v);
  void SetF32(const std::string& key, float v);
  void SetBool(const std::string& key, bool v);
  void SetString(const std::string& key, const std::string& v);
  void SetStringArray(const std::string& key, const std::vector<std::string>& v);
  void SetF32Array(const std::string& key, const std::vector<float>& v);
  void SetI32Array(const std::string& key, const std::vector<int32_t>& v);
  // Any type id followed by raw bytes, for values no valid writer would produce.
  void SetRaw(const std::string& key, uint32_t type, std::string payload);
  bool Remove(const std::string& key);
  bool Has(const std::string& key) const;

  void AddTensor(const std::string& name, uint32_t ggml_type, std::vector<uint64_t> dims,
                 std::string data);
  Tensor* FindTensor(const std::string& name);
  bool RemoveTensor(const std::string& name);
  std::vector<Tensor>& tensors() { return tensors_; }

  void set_version(uint32_t v) { version_ = v; }
  // The alignment the data layout uses (general.alignment is separate metadata).
  void set_alignment(uint64_t a) { alignment_ = a; }

  struct Image {
    std::string bytes;
    GgufLayout layout;
  };
  Image Build() const;

 private:
  void Set(const std::string& key, uint32_t type, std::string payload);

  uint32_t version_ = 3;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, std::pair<uint32_t, std::string>>> kvs_;
  std::vector<Tensor> tensors_;
};

// Little-endian encoding helpers for hand-made payloads.
template <typename T>
void AppendPod(std::string* out, const T& v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void AppendGgufString(std::string* out, const std::string& s);

}  // namespace rsd::testing
