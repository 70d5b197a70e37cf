#include "tests/support/gguf_writer.h"

#include <algorithm>
#include <bit>
#include <cstring>

namespace rsd::testing {

static_assert(std::endian::native == std::endian::little, "GGUF files are written little-endian");

uint32_t GgmlTypeId(DType t) {
  switch (t) {
    case DType::kF32:
      return 0;
    case DType::kF16:
      return 1;
    case DType::kQ4_0:
      return 2;
    case DType::kQ4_1:
      return 3;
    case DType::kQ8_0:
      return 8;
    case DType::kBF16:
      return 30;
  }
  return 0;
}

void AppendGgufString(std::string* out, const std::string& s) {
  AppendPod(out, static_cast<uint64_t>(s.size()));
  out->append(s);
}

void GgufBuilder::Set(const std::string& key, uint32_t type, std::string payload) {
  for (auto& kv : kvs_) {
    if (kv.first == key) {
      kv.second = {type, std::move(payload)};
      return;
    }
  }
  kvs_.push_back({key, {type, std::move(payload)}});
}

void GgufBuilder::SetU32(const std::string& key, uint32_t v) {
  std::string p;
  AppendPod(&p, v);
  Set(key, static_cast<uint32_t>(GgufType::kU32), p);
}
void GgufBuilder::SetI32(const std::string& key, int32_t v) {
  std::string p;
  AppendPod(&p, v);
  Set(key, static_cast<uint32_t>(GgufType::kI32), p);
}
void GgufBuilder::SetU64(const std::string& key, uint64_t v) {
  std::string p;
  AppendPod(&p, v);
  Set(key, static_cast<uint32_t>(GgufType::kU64), p);
}
void GgufBuilder::SetF32(const std::string& key, float v) {
  std::string p;
  AppendPod(&p, v);
  Set(key, static_cast<uint32_t>(GgufType::kF32), p);
}
void GgufBuilder::SetBool(const std::string& key, bool v) {
  Set(key, static_cast<uint32_t>(GgufType::kBool), std::string(1, v ? '\1' : '\0'));
}
void GgufBuilder::SetString(const std::string& key, const std::string& v) {
  std::string p;
  AppendGgufString(&p, v);
  Set(key, static_cast<uint32_t>(GgufType::kString), p);
}
void GgufBuilder::SetStringArray(const std::string& key, const std::vector<std::string>& v) {
  std::string p;
  AppendPod(&p, static_cast<uint32_t>(GgufType::kString));
  AppendPod(&p, static_cast<uint64_t>(v.size()));
  for (const std::string& s : v) AppendGgufString(&p, s);
  Set(key, static_cast<uint32_t>(GgufType::kArray), p);
}
void GgufBuilder::SetF32Array(const std::string& key, const std::vector<float>& v) {
  std::string p;
  AppendPod(&p, static_cast<uint32_t>(GgufType::kF32));
  AppendPod(&p, static_cast<uint64_t>(v.size()));
  for (float f : v) AppendPod(&p, f);
  Set(key, static_cast<uint32_t>(GgufType::kArray), p);
}
void GgufBuilder::SetI32Array(const std::string& key, const std::vector<int32_t>& v) {
  std::string p;
  AppendPod(&p, static_cast<uint32_t>(GgufType::kI32));
  AppendPod(&p, static_cast<uint64_t>(v.size()));
  for (int32_t i : v) AppendPod(&p, i);
  Set(key, static_cast<uint32_t>(GgufType::kArray), p);
}
void GgufBuilder::SetRaw(const std::string& key, uint32_t type, std::string payload) {
  Set(key, type, std::move(payload));
}

bool GgufBuilder::Remove(const std::string& key) {
  auto it = std::find_if(kvs_.begin(), kvs_.end(), [&](const auto& kv) { return kv.first == key; });
  if (it == kvs_.end()) return false;
  kvs_.erase(it);
  return true;
}

bool GgufBuilder::Has(const std::string& key) const {
  return std::any_of(kvs_.begin(), kvs_.end(), [&](const auto& kv) { return kv.first == key; });
}

void GgufBuilder::AddTensor(const std::string& name, uint32_t ggml_type, std::vector<uint64_t> dims,
                            std::string data) {
  tensors_.push_back({name, ggml_type, std::move(dims), std::move(data)});
}

GgufBuilder::Tensor* GgufBuilder::FindTensor(const std::string& name) {
  for (Tensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

bool GgufBuilder::RemoveTensor(const std::string& name) {
  auto it = std::find_if(tensors_.begin(), tensors_.end(),
                         [&](const Tensor& t) { return t.name == name; });
  if (it == tensors_.end()) return false;
  tensors_.erase(it);
  return true;
}

GgufBuilder::Image GgufBuilder::Build() const {
  Image img;
  std::string& b = img.bytes;
  GgufLayout& l = img.layout;
  const uint64_t align = alignment_ == 0 ? 1 : alignment_;
  auto pad = [&](std::string* s, size_t base) {
    while ((s->size() - base) % align != 0) s->push_back('\0');
  };
  b.append("GGUF");
  AppendPod(&b, version_);
  AppendPod(&b, static_cast<uint64_t>(tensors_.size()));
  AppendPod(&b, static_cast<uint64_t>(kvs_.size()));
  for (const auto& [key, value] : kvs_) {
    GgufLayout::Kv kv;
    kv.key_begin = b.size();
    AppendGgufString(&b, key);
    kv.type_offset = b.size();
    AppendPod(&b, value.first);
    kv.value_begin = b.size();
    b.append(value.second);
    l.kvs[key] = kv;
  }
  l.tensor_infos_begin = b.size();
  // Data offsets: each tensor starts on the alignment, relative to the data section.
  std::vector<uint64_t> offsets;
  uint64_t off = 0;
  for (const Tensor& t : tensors_) {
    offsets.push_back(off);
    off += (t.data.size() + align - 1) / align * align;
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    GgufLayout::Tensor tl;
    tl.info_begin = b.size();
    AppendGgufString(&b, t.name);
    tl.dims_offset = b.size();
    AppendPod(&b, static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) AppendPod(&b, d);
    tl.type_offset = b.size();
    AppendPod(&b, t.ggml_type);
    tl.offset_offset = b.size();
    AppendPod(&b, offsets[i]);
    l.tensors[t.name] = tl;
  }
  pad(&b, 0);
  l.data_begin = b.size();
  for (size_t i = 0; i < tensors_.size(); ++i) {
    l.tensors[tensors_[i].name].data_begin = b.size();
    b.append(tensors_[i].data);
    pad(&b, l.data_begin);
  }
  return img;
}

}  // namespace rsd::testing
