// Hugging Face folders: config.json, one or more *.safetensors (model.safetensors.index.json when
// sharded), tokenizer.json and tokenizer_config.json. Safetensors headers are untrusted JSON: the
// header length, every dtype, shape and data offset is checked before a view is made.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "storage/common/status.h"
#include "worker/model/hf_internal.h"
#include "worker/model/model_file.h"
#include "worker/model/model_loader_internal.h"
#include "worker/model/tokenizer.h"

namespace rsd {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the safetensors library's own limit

absl::Status Invalid(const std::string& path, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
}

// The safetensors dtype names: ours, then valid ones we do not run.
absl::StatusOr<DType> SafetensorsDType(const std::string& path, const std::string& name,
                                       const std::string& dtype) {
  if (dtype == "F32") return DType::kF32;
  if (dtype == "F16") return DType::kF16;
  if (dtype == "BF16") return DType::kBF16;
  static const char* const kKnown[] = {"F64",     "I64",     "I32", "I16",     "I8",     "U8",
                                       "U16",     "U32",     "U64", "BOOL",    "C64",    "F8_E4M3",
                                       "F8_E5M2", "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2"};
  for (const char* k : kKnown) {
    if (dtype == k) {
      return absl::UnimplementedError(absl::StrCat(path, ": tensor '", name, "' has dtype ", dtype,
                                                   "; supported dtypes are F32, F16 and BF16"));
    }
  }
  return Invalid(path, absl::StrCat("tensor '", name, "' has unknown dtype '", dtype, "'"));
}

absl::StatusOr<std::vector<int64_t>> ReadShape(const std::string& path, const std::string& name,
                                               const json& shape, uint64_t* numel) {
  if (!shape.is_array() || shape.size() > 8) {
    return Invalid(path, absl::StrCat("tensor '", name, "' has a bad shape"));
  }
  if (shape.empty()) {
    return absl::UnimplementedError(absl::StrCat(path, ": tensor '", name, "' is a scalar"));
  }
  std::vector<int64_t> out;
  *numel = 1;
  for (const json& d : shape) {
    uint64_t v = d.is_number_unsigned() ? d.get<uint64_t>() : 0;
    if (v == 0 || v > (uint64_t{1} << 40) || *numel > (uint64_t{1} << 62) / v) {
      return Invalid(path, absl::StrCat("tensor '", name, "' has an absurd shape ", shape.dump()));
    }
    *numel *= v;
    out.push_back(static_cast<int64_t>(v));
  }
  return out;
}

absl::StatusOr<TensorView> ReadEntry(const std::string& path, const std::string& name,
                                     const json& e, const uint8_t* base, uint64_t data_size) {
  if (!e.is_object() || !e.contains("dtype") || !e["dtype"].is_string() || !e.contains("shape") ||
      !e.contains("data_offsets")) {
    return Invalid(path, absl::StrCat("tensor '", name, "' lacks dtype, shape or data_offsets"));
  }
  TensorView v;
  v.name = name;
  RSD_ASSIGN_OR_RETURN(v.dtype, SafetensorsDType(path, name, e["dtype"].get<std::string>()));
  uint64_t numel = 0;
  RSD_ASSIGN_OR_RETURN(v.shape, ReadShape(path, name, e["shape"], &numel));
  const json& off = e["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
      !off[1].is_number_unsigned()) {
    return Invalid(path, absl::StrCat("tensor '", name, "' has bad data_offsets"));
  }
  uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
  uint64_t nbytes = numel * DTypeBlockBytes(v.dtype);
  if (begin > end || end > data_size) {
    return Invalid(
        path, absl::StrCat("tensor '", name, "' data [", begin, ", ", end,
                           ") runs past the end of the file (data holds ", data_size, " bytes)"));
  }
  if (end - begin != nbytes) {
    return Invalid(path, absl::StrCat("tensor '", name, "' has ", end - begin,
                                      " bytes of data but ", "its dtype and shape need ", nbytes));
  }
  v.data = base + begin;
  v.nbytes = nbytes;
  return v;
}

absl::StatusOr<json> ParseHeader(const std::string& path, const MappedFile& f) {
  if (f.size() < 8) return Invalid(path, "truncated: no safetensors header length");
  uint64_t n = 0;
  std::memcpy(&n, f.data(), 8);
  if (n > f.size() - 8 || n > kMaxHeaderBytes) {
    return Invalid(path, absl::StrCat("safetensors header length ", n, " runs past the end of ",
                                      "the file (size ", f.size(), ")"));
  }
  try {
    json j = json::parse(f.data() + 8, f.data() + 8 + n);
    if (!j.is_object()) return Invalid(path, "safetensors header is not a JSON object");
    return j;
  } catch (const json::exception& e) {
    return Invalid(path, absl::StrCat("bad safetensors JSON header: ", e.what()));
  }
}

// Views (by HF name) of every tensor in one .safetensors file.
absl::StatusOr<std::vector<TensorView>> ReadSafetensors(const std::string& path,
                                                        const MappedFile& f) {
  RSD_ASSIGN_OR_RETURN(json header, ParseHeader(path, f));
  uint64_t header_len = 0;
  std::memcpy(&header_len, f.data(), 8);
  const uint8_t* base = f.data() + 8 + header_len;
  const uint64_t data_size = f.size() - 8 - header_len;
  std::vector<TensorView> views;
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") continue;
    RSD_ASSIGN_OR_RETURN(TensorView v, ReadEntry(path, name, e, base, data_size));
    views.push_back(std::move(v));
  }
  std::vector<const TensorView*> order;
  for (const TensorView& v : views) order.push_back(&v);
  std::sort(order.begin(), order.end(),
            [](const TensorView* a, const TensorView* b) { return a->data < b->data; });
  for (size_t i = 1; i < order.size(); ++i) {
    if (order[i - 1]->data + order[i - 1]->nbytes > order[i]->data) {
      return Invalid(path, absl::StrCat("tensor data of '", order[i - 1]->name, "' and '",
                                        order[i]->name, "' overlap"));
    }
  }
  return views;
}

// The .safetensors files of the folder, from the shard index when there is one.
absl::StatusOr<std::vector<std::string>> ShardFiles(const std::string& dir) {
  std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  if (fs::exists(index_path)) {
    RSD_ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
    json j;
    try {
      j = json::parse(text);
    } catch (const json::exception& e) {
      return Invalid(index_path, absl::StrCat("bad JSON: ", e.what()));
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      return Invalid(index_path, "no weight_map object");
    }
    std::set<std::string> files;
    for (const auto& [tensor, file] : j["weight_map"].items()) {
      if (!file.is_string() || file.get<std::string>().empty() ||
          file.get<std::string>().find('/') != std::string::npos ||
          file.get<std::string>().rfind("..", 0) == 0) {
        return Invalid(index_path, absl::StrCat("bad shard file name for tensor '", tensor, "'"));
      }
      files.insert(file.get<std::string>());
    }
    std::vector<std::string> out;
    for (const std::string& f : files) out.push_back((fs::path(dir) / f).string());
    return out;
  }
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".safetensors") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  if (out.empty()) return Invalid(dir, "no *.safetensors files in the folder");
  return out;
}

absl::Status LoadTensors(const std::string& dir, ModelFile* m) {
  RSD_ASSIGN_OR_RETURN(std::vector<std::string> files, ShardFiles(dir));
  for (const std::string& path : files) {
    if (!fs::is_regular_file(path)) return Invalid(path, "safetensors shard is missing");
    RSD_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapping, MappedFile::Open(path));
    RSD_ASSIGN_OR_RETURN(std::vector<TensorView> views, ReadSafetensors(path, *mapping));
    for (TensorView& v : views) {
      std::string name = hf::CanonicalTensorName(v.name);
      if (name.empty()) continue;
      if (name == "output.weight" && m->config.tied_embeddings) continue;  // saved tied copy
      v.name = name;
      if (!m->tensors.emplace(name, std::move(v)).second) {
        return Invalid(path, absl::StrCat("tensor '", name, "' appears twice in the folder"));
      }
    }
    m->mappings.push_back(std::move(mapping));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadOptional(const std::string& path) {
  if (!fs::exists(path)) return std::string();
  return ReadFileToString(path);
}

absl::Status LoadTokenizer(const std::string& dir, ModelFile* m) {
  std::string tok_path = (fs::path(dir) / "tokenizer.json").string();
  std::string cfg_path = (fs::path(dir) / "tokenizer_config.json").string();
  if (!fs::exists(tok_path)) return Invalid(tok_path, "missing (the folder has no tokenizer)");
  RSD_ASSIGN_OR_RETURN(std::string tok, ReadFileToString(tok_path));
  RSD_ASSIGN_OR_RETURN(std::string cfg, ReadOptional(cfg_path));
  RSD_ASSIGN_OR_RETURN(m->tokenizer, ParseHfTokenizerJson(tok_path, tok, cfg));
  RSD_ASSIGN_OR_RETURN(m->chat_template, hf::ChatTemplateFromTokenizerConfig(cfg_path, cfg));
  RSD_ASSIGN_OR_RETURN(std::string jinja,
                       ReadOptional((fs::path(dir) / "chat_template.jinja").string()));
  if (!jinja.empty()) m->chat_template = jinja;
  // Like llama.cpp's converter, pad a tokenizer shorter than the embedding with unused tokens
  // (only when config.json agrees with the embedding; otherwise validation reports it).
  TokenizerSpec& t = m->tokenizer;
  const TensorView* embd = m->Find("token_embd.weight");
  if (embd != nullptr && embd->shape.size() == 2 && embd->shape[0] == m->config.vocab_size &&
      embd->shape[0] <= internal::kMaxVocab) {
    for (size_t i = t.tokens.size(); i < static_cast<size_t>(embd->shape[0]); ++i) {
      t.tokens.push_back(absl::StrCat("[PAD", i, "]"));
      t.types.push_back(TokenType::kUnused);
      if (!t.scores.empty()) t.scores.push_back(-1000.0f);
    }
  }
  if (t.types.size() < t.tokens.size()) t.types.resize(t.tokens.size(), TokenType::kNormal);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelFile>> LoadHfFolder(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return absl::NotFoundError(absl::StrCat(dir, ": no such directory"));
  if (!fs::is_directory(dir, ec)) return Invalid(dir, "not a directory");
  std::string config_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(config_path)) return Invalid(config_path, "missing (not a Hugging Face folder)");
  RSD_ASSIGN_OR_RETURN(std::string config_text, ReadFileToString(config_path));
  auto m = std::make_unique<ModelFile>();
  m->path = dir;
  m->format = "safetensors";
  RSD_ASSIGN_OR_RETURN(m->config, hf::ParseConfigJson(config_path, config_text));
  m->config.name = fs::path(dir).lexically_normal().filename().string();
  if (m->config.name.empty()) m->config.name = fs::path(dir).parent_path().filename().string();
  RSD_RETURN_IF_ERROR(LoadTensors(dir, m.get()));
  m->config.qkv_bias = m->Find("blk.0.attn_q.bias") != nullptr;
  RSD_RETURN_IF_ERROR(LoadTokenizer(dir, m.get()));
  RSD_RETURN_IF_ERROR(internal::FinishModel(m.get()));
  return m;
}

}  // namespace rsd
