// GGUF v2/v3 container parser and LoadGguf. The parser trusts nothing: every count, length and
// offset is checked against the bytes that remain before anything is allocated or read.
#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "storage/common/status.h"
#include "worker/model/gguf_file.h"
#include "worker/model/model_file.h"
#include "worker/model/model_loader_internal.h"

namespace rsd::gguf {
namespace {

constexpr uint32_t kMaxDims = 4;   // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 4;  // nested arrays deeper than this are refused
constexpr uint64_t kMaxAlignment = 1 << 20;

size_t ScalarSize(ValueType t) {
  switch (t) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kBool:
      return 1;
    case ValueType::kU16:
    case ValueType::kI16:
      return 2;
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kF32:
      return 4;
    case ValueType::kU64:
    case ValueType::kI64:
    case ValueType::kF64:
      return 8;
    case ValueType::kString:
    case ValueType::kArray:
      return 0;
  }
  return 0;
}

bool KnownValueType(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::kF64); }

// A bounds-checked little-endian reader over the mapped file.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* data, size_t size)
      : path_(path), data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  const uint8_t* here() const { return data_ + pos_; }

  absl::Status Need(uint64_t n, const std::string& what) const {
    if (n > left()) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": truncated: ", what, " at offset ",
                                                     pos_, " needs ", n, " bytes but only ", left(),
                                                     " remain (file size ", size_, ")"));
    }
    return absl::OkStatus();
  }
  absl::Status Skip(uint64_t n, const std::string& what) {
    RSD_RETURN_IF_ERROR(Need(n, what));
    pos_ += n;
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> Uint(size_t n, const std::string& what) {
    RSD_RETURN_IF_ERROR(Need(n, what));
    uint64_t v = 0;
    std::memcpy(&v, data_ + pos_, n);  // little-endian host
    pos_ += n;
    return v;
  }
  absl::StatusOr<std::string> String(const std::string& what) {
    RSD_ASSIGN_OR_RETURN(uint64_t len, Uint(8, what + " length"));
    if (len > left()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": ", what, " has length ", len, " at offset ", pos_ - 8,
                       ", past the end of the file (", left(), " bytes remain)"));
    }
    std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

absl::Status ParseValue(const std::string& path, Cursor& c, ValueType type, const std::string& what,
                        int depth, Value* out);

absl::Status ParseArray(const std::string& path, Cursor& c, const std::string& what, int depth,
                        Value* out) {
  RSD_ASSIGN_OR_RETURN(uint64_t et, c.Uint(4, what + " element type"));
  if (!KnownValueType(static_cast<uint32_t>(et))) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", what, " has unknown array element type ", et));
  }
  out->elem_type = static_cast<ValueType>(et);
  RSD_ASSIGN_OR_RETURN(out->count, c.Uint(8, what + " element count"));
  size_t elem = ScalarSize(out->elem_type);
  // Strings need at least their 8-byte length, nested arrays 12 bytes of header.
  uint64_t min_elem = elem != 0 ? elem : (out->elem_type == ValueType::kString ? 8 : 12);
  if (out->count > c.left() / min_elem) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", what, " claims ", out->count, " ", ValueTypeName(out->elem_type),
                     " elements at offset ", c.pos() - 8, ", past the end of the file (", c.left(),
                     " bytes remain)"));
  }
  if (elem != 0) {
    out->raw = c.here();
    return c.Skip(out->count * elem, what);
  }
  if (out->elem_type == ValueType::kString) {
    out->strings.reserve(out->count);
    for (uint64_t i = 0; i < out->count; ++i) {
      RSD_ASSIGN_OR_RETURN(std::string s, c.String(absl::StrCat(what, "[", i, "]")));
      out->strings.push_back(std::move(s));
    }
    return absl::OkStatus();
  }
  if (depth >= kMaxArrayDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", what, " nests arrays deeper than ", kMaxArrayDepth));
  }
  for (uint64_t i = 0; i < out->count; ++i) {
    Value inner;
    RSD_RETURN_IF_ERROR(
        ParseValue(path, c, ValueType::kArray, absl::StrCat(what, "[", i, "]"), depth + 1, &inner));
  }
  return absl::OkStatus();
}

absl::Status ParseValue(const std::string& path, Cursor& c, ValueType type, const std::string& what,
                        int depth, Value* out) {
  out->type = type;
  if (type == ValueType::kString) {
    RSD_ASSIGN_OR_RETURN(out->str, c.String(what));
    return absl::OkStatus();
  }
  if (type == ValueType::kArray) return ParseArray(path, c, what, depth, out);
  RSD_ASSIGN_OR_RETURN(out->bits, c.Uint(ScalarSize(type), what));
  return absl::OkStatus();
}

absl::Status ParseMetadata(const std::string& path, Cursor& c, uint64_t n_kv, File* f) {
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string what = absl::StrCat("metadata key #", i);
    RSD_ASSIGN_OR_RETURN(std::string key, c.String(what));
    what = absl::StrCat("metadata '", key, "'");
    RSD_ASSIGN_OR_RETURN(uint64_t type, c.Uint(4, what + " type"));
    if (!KnownValueType(static_cast<uint32_t>(type))) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", what, " has unknown value type ", type));
    }
    Value v;
    RSD_RETURN_IF_ERROR(ParseValue(path, c, static_cast<ValueType>(type), what, 0, &v));
    if (!f->metadata.emplace(key, std::move(v)).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": duplicate metadata key '", key, "'"));
    }
  }
  return absl::OkStatus();
}

std::optional<DType> SupportedType(uint32_t ggml_type) {
  switch (ggml_type) {
    case 0:
      return DType::kF32;
    case 1:
      return DType::kF16;
    case 2:
      return DType::kQ4_0;
    case 3:
      return DType::kQ4_1;
    case 8:
      return DType::kQ8_0;
    case 30:
      return DType::kBF16;
    default:
      return std::nullopt;
  }
}

std::string DimsString(const std::vector<uint64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

absl::Status ParseTensorInfo(const std::string& path, Cursor& c, uint64_t i, TensorInfo* t) {
  RSD_ASSIGN_OR_RETURN(t->name, c.String(absl::StrCat("tensor info #", i, " name")));
  std::string what = absl::StrCat("tensor '", t->name, "'");
  RSD_ASSIGN_OR_RETURN(uint64_t n_dims, c.Uint(4, what + " dimension count"));
  if (n_dims == 0 || n_dims > kMaxDims) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", what, " has ", n_dims, " dimensions (1 to 4 allowed)"));
  }
  uint64_t numel = 1;
  for (uint64_t d = 0; d < n_dims; ++d) {
    RSD_ASSIGN_OR_RETURN(uint64_t dim, c.Uint(8, what + " dimension"));
    t->dims.push_back(dim);
    if (dim == 0 || dim > (uint64_t{1} << 40) || numel > (uint64_t{1} << 62) / dim) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", what, " has an absurd dimension ", dim));
    }
    numel *= dim;
  }
  RSD_ASSIGN_OR_RETURN(uint64_t type, c.Uint(4, what + " type"));
  t->ggml_type = static_cast<uint32_t>(type);
  RSD_ASSIGN_OR_RETURN(t->offset, c.Uint(8, what + " data offset"));
  std::optional<DType> dtype = SupportedType(t->ggml_type);
  if (!dtype) {
    return absl::UnimplementedError(
        absl::StrCat(path, ": ", what, " has tensor type ", type, " (", GgmlTypeName(t->ggml_type),
                     "); supported types are F32, F16, BF16, Q8_0, Q4_0, Q4_1"));
  }
  t->dtype = *dtype;
  if (t->dims[0] % DTypeBlockValues(t->dtype) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": ", what, " of type ", DTypeName(t->dtype), " has shape ", DimsString(t->dims),
        " whose inner dimension is not a multiple of ", DTypeBlockValues(t->dtype)));
  }
  t->nbytes = numel / DTypeBlockValues(t->dtype) * DTypeBlockBytes(t->dtype);
  return absl::OkStatus();
}

// Data must lie inside the file, start on the alignment, and not overlap another tensor.
absl::Status CheckDataLayout(const std::string& path, size_t size, File* f) {
  std::vector<const TensorInfo*> order;
  for (const TensorInfo& t : f->tensors) {
    uint64_t avail = f->data_offset <= size ? size - f->data_offset : 0;
    if (t.offset % f->alignment != 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", t.name, "' data offset ",
                                                     t.offset, " is not a multiple of the ",
                                                     "alignment ", f->alignment));
    }
    if (t.offset > avail || t.nbytes > avail - t.offset) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", t.name, "' data [", t.offset, ", +", t.nbytes,
                       ") runs past the end of the file (data section holds ", avail, " bytes)"));
    }
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < order.size(); ++i) {
    if (order[i - 1]->offset + order[i - 1]->nbytes > order[i]->offset) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor data of '", order[i - 1]->name,
                                                     "' and '", order[i]->name, "' overlap"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> ParseHeader(const std::string& path, Cursor& c) {
  RSD_RETURN_IF_ERROR(c.Need(4, "magic"));
  if (std::memcmp(c.here(), "GGUF", 4) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": bad magic (not a GGUF file)"));
  }
  RSD_RETURN_IF_ERROR(c.Skip(4, "magic"));
  RSD_ASSIGN_OR_RETURN(uint64_t version, c.Uint(4, "version"));
  if (version == 2 || version == 3) return static_cast<uint32_t>(version);
  if (version == 1 || (version > 3 && version < 256)) {
    return absl::UnimplementedError(
        absl::StrCat(path, ": GGUF version ", version, " is not supported (2 and 3 are)"));
  }
  return absl::InvalidArgumentError(absl::StrCat(path, ": bad GGUF version ", version,
                                                 " (a big-endian file, or not a GGUF file)"));
}

absl::Status ReadAlignment(const std::string& path, File* f) {
  const Value* a = f->Find("general.alignment");
  if (a == nullptr) return absl::OkStatus();
  std::optional<int64_t> v = a->IsInteger() ? a->AsInt() : std::nullopt;
  if (!v || *v <= 0 || static_cast<uint64_t>(*v) > kMaxAlignment || (*v & (*v - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": general.alignment must be a power of two up to ", kMaxAlignment));
  }
  f->alignment = static_cast<uint64_t>(*v);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<File> Parse(const std::string& path, const uint8_t* data, size_t size) {
  Cursor c(path, data, size);
  File f;
  RSD_ASSIGN_OR_RETURN(f.version, ParseHeader(path, c));
  RSD_ASSIGN_OR_RETURN(uint64_t n_tensors, c.Uint(8, "tensor count"));
  RSD_ASSIGN_OR_RETURN(uint64_t n_kv, c.Uint(8, "metadata count"));
  // Each key/value needs at least 13 bytes and each tensor info 28.
  if (n_kv > c.left() / 13 || n_tensors > c.left() / 28 || n_kv * 13 + n_tensors * 28 > c.left()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header claims ", n_tensors, " tensors and ", n_kv,
                     " metadata entries, more than a file of ", size, " bytes can hold"));
  }
  RSD_RETURN_IF_ERROR(ParseMetadata(path, c, n_kv, &f));
  RSD_RETURN_IF_ERROR(ReadAlignment(path, &f));
  f.tensors.resize(n_tensors);
  std::map<std::string, int> seen;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    RSD_RETURN_IF_ERROR(ParseTensorInfo(path, c, i, &f.tensors[i]));
    if (!seen.emplace(f.tensors[i].name, 0).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": duplicate tensor '", f.tensors[i].name, "'"));
    }
  }
  f.data_offset = (c.pos() + f.alignment - 1) / f.alignment * f.alignment;
  RSD_RETURN_IF_ERROR(CheckDataLayout(path, size, &f));
  return f;
}

}  // namespace rsd::gguf

namespace rsd {

absl::StatusOr<std::unique_ptr<ModelFile>> LoadGguf(const std::string& path) {
  RSD_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapping, MappedFile::Open(path));
  RSD_ASSIGN_OR_RETURN(gguf::File file, gguf::Parse(path, mapping->data(), mapping->size()));
  RSD_ASSIGN_OR_RETURN(gguf::ModelInfo info, gguf::ReadModelInfo(path, file));
  auto model = std::make_unique<ModelFile>();
  model->path = path;
  model->format = "gguf";
  model->config = std::move(info.config);
  model->tokenizer = std::move(info.tokenizer);
  model->chat_template = std::move(info.chat_template);
  for (const gguf::TensorInfo& t : file.tensors) {
    TensorView v;
    v.name = t.name;
    v.dtype = t.dtype;
    v.shape.assign(t.dims.rbegin(), t.dims.rend());  // GGUF lists dims innermost first
    v.data = mapping->data() + file.data_offset + t.offset;
    v.nbytes = t.nbytes;
    model->tensors.emplace(t.name, std::move(v));
  }
  model->mappings.push_back(std::move(mapping));
  RSD_RETURN_IF_ERROR(internal::FinishModel(model.get()));
  return model;
}

}  // namespace rsd
