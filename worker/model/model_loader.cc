// LoadModel's dispatch and the validation, Q/K un-permutation and fingerprint every loader shares.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "storage/common/hash.h"
#include "storage/common/status.h"
#include "worker/model/model_file.h"
#include "worker/model/model_loader_internal.h"

namespace rsd {
namespace internal {
namespace {

absl::Status Invalid(const ModelFile& m, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(m.path, ": ", problem));
}
absl::Status Unsupported(const ModelFile& m, const std::string& problem) {
  return absl::UnimplementedError(absl::StrCat(m.path, ": ", problem));
}

absl::Status CheckRange(const ModelFile& m, const char* field, int64_t v, int64_t lo, int64_t hi) {
  if (v >= lo && v <= hi) return absl::OkStatus();
  return Invalid(m, absl::StrCat(field, " = ", v, " is out of range (", lo, " to ", hi, ")"));
}

absl::Status CheckPositive(const ModelFile& m, const char* field, float v, float hi) {
  if (std::isfinite(v) && v > 0.0f && v <= hi) return absl::OkStatus();
  return Invalid(m, absl::StrCat(field, " = ", v, " is out of range (above 0, at most ", hi, ")"));
}

absl::Status ValidateConfig(const ModelFile& m) {
  const ModelConfig& c = m.config;
  RSD_RETURN_IF_ERROR(CheckRange(m, "n_layers", c.n_layers, 1, kMaxLayers));
  RSD_RETURN_IF_ERROR(CheckRange(m, "d_model", c.d_model, 1, kMaxModelDim));
  RSD_RETURN_IF_ERROR(CheckRange(m, "n_heads", c.n_heads, 1, kMaxHeads));
  RSD_RETURN_IF_ERROR(CheckRange(m, "n_kv_heads", c.n_kv_heads, 1, c.n_heads));
  RSD_RETURN_IF_ERROR(CheckRange(m, "head_dim", c.head_dim, 2, kMaxHeadDim));
  RSD_RETURN_IF_ERROR(CheckRange(m, "d_ff", c.d_ff, 1, kMaxFeedForward));
  RSD_RETURN_IF_ERROR(CheckRange(m, "vocab_size", c.vocab_size, 1, kMaxVocab));
  RSD_RETURN_IF_ERROR(CheckRange(m, "context_length", c.context_length, 1, kMaxContext));
  if (c.n_heads % c.n_kv_heads != 0) {
    return Invalid(
        m, absl::StrCat("n_heads ", c.n_heads, " is not a multiple of n_kv_heads ", c.n_kv_heads));
  }
  if (c.head_dim % 2 != 0) return Invalid(m, absl::StrCat("head_dim ", c.head_dim, " is odd"));
  if (c.rope_dim != c.head_dim) {
    return Unsupported(m, absl::StrCat("partial RoPE (", c.rope_dim, " of ", c.head_dim,
                                       " head dimensions) is not supported"));
  }
  RSD_RETURN_IF_ERROR(CheckPositive(m, "rms_eps", c.rms_eps, 1.0f));
  RSD_RETURN_IF_ERROR(CheckPositive(m, "rope_theta", c.rope_theta, 1e12f));
  RSD_RETURN_IF_ERROR(CheckPositive(m, "rope_scale_factor", c.rope_scale_factor, 1e6f));
  return absl::OkStatus();
}

absl::Status ValidateVocab(const ModelFile& m) {
  const TokenizerSpec& t = m.tokenizer;
  const int64_t n = static_cast<int64_t>(t.tokens.size());
  if (const TensorView* e = m.Find("token_embd.weight");
      e != nullptr && e->shape.size() == 2 && e->shape[0] != m.config.vocab_size) {
    return Invalid(m, absl::StrCat("vocab_size ", m.config.vocab_size, " does not match the ",
                                   e->shape[0], " rows of token_embd.weight"));
  }
  if (n != m.config.vocab_size) {
    return Invalid(m, absl::StrCat("the tokenizer has ", n,
                                   " tokens but the model's vocabulary has ", m.config.vocab_size));
  }
  if ((!t.scores.empty() && static_cast<int64_t>(t.scores.size()) != n) ||
      static_cast<int64_t>(t.types.size()) != n) {
    return Invalid(m, "tokenizer scores or token types do not match the token count");
  }
  for (int32_t id : {t.bos_id, t.eos_id, t.eot_id, t.unk_id, t.pad_id}) {
    if (id < -1 || id >= n)
      return Invalid(m, absl::StrCat("special token id ", id, " out of range"));
  }
  return absl::OkStatus();
}

struct Expected {
  std::vector<int64_t> shape;
  bool required = true;
};

std::map<std::string, Expected> ExpectedTensors(const ModelConfig& c) {
  const int64_t d = c.d_model, q = int64_t{c.n_heads} * c.head_dim;
  const int64_t kv = int64_t{c.n_kv_heads} * c.head_dim, ff = c.d_ff, v = c.vocab_size;
  std::map<std::string, Expected> e;
  e["token_embd.weight"] = {{v, d}};
  e["output_norm.weight"] = {{d}};
  if (!c.tied_embeddings) e["output.weight"] = {{v, d}};
  e["rope_freqs.weight"] = {{c.head_dim / 2}, false};
  for (int i = 0; i < c.n_layers; ++i) {
    std::string b = absl::StrCat("blk.", i, ".");
    e[b + "attn_norm.weight"] = {{d}};
    e[b + "attn_q.weight"] = {{q, d}};
    e[b + "attn_k.weight"] = {{kv, d}};
    e[b + "attn_v.weight"] = {{kv, d}};
    e[b + "attn_output.weight"] = {{d, q}};
    e[b + "ffn_norm.weight"] = {{d}};
    e[b + "ffn_gate.weight"] = {{ff, d}};
    e[b + "ffn_up.weight"] = {{ff, d}};
    e[b + "ffn_down.weight"] = {{d, ff}};
    if (c.qkv_bias) {
      e[b + "attn_q.bias"] = {{q}};
      e[b + "attn_k.bias"] = {{kv}};
      e[b + "attn_v.bias"] = {{kv}};
    }
  }
  return e;
}

std::string ShapeString(const std::vector<int64_t>& s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
}

absl::Status CheckTensor(const ModelFile& m, const TensorView& t, const Expected& e) {
  if (t.shape != e.shape) {
    return Invalid(m, absl::StrCat("tensor '", t.name, "' has shape ", ShapeString(t.shape),
                                   ", expected ", ShapeString(e.shape)));
  }
  if (t.shape.size() == 1 && DTypeBlockValues(t.dtype) != 1) {
    return Unsupported(m,
                       absl::StrCat("1-D tensor '", t.name, "' has block type ", DTypeName(t.dtype),
                                    "; only F32, F16 and BF16 are supported"));
  }
  if (t.cols() % DTypeBlockValues(t.dtype) != 0 ||
      t.nbytes != DTypeRowBytes(t.dtype, t.cols()) * static_cast<size_t>(t.rows())) {
    return Invalid(m,
                   absl::StrCat("tensor '", t.name, "' of type ", DTypeName(t.dtype), " and shape ",
                                ShapeString(t.shape), " has ", t.nbytes, " bytes"));
  }
  return absl::OkStatus();
}

// A tensor the graph does not use: a layer past the last one is malformed; anything else is a
// feature we do not run (e.g. Qwen3's q_norm), refused rather than silently ignored.
absl::Status UnexpectedTensor(const ModelFile& m, const std::string& name) {
  if (name.rfind("blk.", 0) == 0) {
    size_t dot = name.find('.', 4);
    int layer = 0;
    if (dot != std::string::npos && absl::SimpleAtoi(name.substr(4, dot - 4), &layer) &&
        (layer < 0 || layer >= m.config.n_layers)) {
      return Invalid(m, absl::StrCat("tensor '", name, "' is for layer ", layer,
                                     " but the model has ", m.config.n_layers, " layers"));
    }
  }
  return Unsupported(m, absl::StrCat("unexpected tensor '", name,
                                     "' (not part of a supported llama-family model)"));
}

absl::Status ValidateTensors(const ModelFile& m) {
  std::map<std::string, Expected> expected = ExpectedTensors(m.config);
  for (const auto& [name, e] : expected) {
    const TensorView* t = m.Find(name);
    if (t == nullptr) {
      if (!e.required) continue;
      return Invalid(m, absl::StrCat("required tensor '", name, "' is missing"));
    }
    RSD_RETURN_IF_ERROR(CheckTensor(m, *t, e));
  }
  for (const auto& [name, t] : m.tensors) {
    if (!expected.count(name)) return UnexpectedTensor(m, name);
  }
  return absl::OkStatus();
}

// Kernels may read F32/F16 through typed pointers; give them 16-byte aligned data.
void AlignTensors(ModelFile* m) {
  for (auto& [name, t] : m->tensors) {
    if (reinterpret_cast<uintptr_t>(t.data) % 16 == 0) continue;
    m->owned.emplace_back(t.data, t.data + t.nbytes);
    t.data = m->owned.back().data();
  }
}

// llama.cpp's convert_hf_to_gguf.py `permute` moved row (s * hd/2 + i) of each head to row
// (2i + s); move every row back. Whole rows move, so block-quantized rows come along intact.
void UnpermuteRows(ModelFile* m, TensorView* t, int n_heads) {
  const bool vec = t->shape.size() == 1;
  const int64_t rows = vec ? t->shape[0] : t->rows();
  const size_t unit = vec ? DTypeBlockBytes(t->dtype) : t->nbytes / static_cast<size_t>(rows);
  const int64_t hd = rows / n_heads, half = hd / 2;
  std::vector<uint8_t> out(t->nbytes);
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t s = 0; s < 2; ++s) {
      for (int64_t i = 0; i < half; ++i) {
        std::memcpy(out.data() + (h * hd + s * half + i) * unit,
                    t->data + (h * hd + 2 * i + s) * unit, unit);
      }
    }
  }
  m->owned.push_back(std::move(out));
  t->data = m->owned.back().data();
}

void UnpermuteQK(ModelFile* m) {
  for (int i = 0; i < m->config.n_layers; ++i) {
    for (const char* kind : {"weight", "bias"}) {
      std::string b = absl::StrCat("blk.", i, ".attn_");
      auto q = m->tensors.find(absl::StrCat(b, "q.", kind));
      auto k = m->tensors.find(absl::StrCat(b, "k.", kind));
      if (q != m->tensors.end()) UnpermuteRows(m, &q->second, m->config.n_heads);
      if (k != m->tensors.end()) UnpermuteRows(m, &k->second, m->config.n_kv_heads);
    }
  }
}

}  // namespace

std::string Fingerprint(const ModelFile& m) {
  // Only what changes the computation: not the name, file format, or how the file paired RoPE
  // dimensions, so a GGUF and a safetensors copy of one model share a fingerprint.
  const ModelConfig& c = m.config;
  Hasher h;
  h.Update("rsd-model-fingerprint-v1");
  for (int64_t v :
       {int64_t{c.n_layers}, int64_t{c.d_model}, int64_t{c.n_heads}, int64_t{c.n_kv_heads},
        int64_t{c.head_dim}, int64_t{c.d_ff}, int64_t{c.vocab_size}, int64_t{c.context_length},
        int64_t{c.rope_dim}, static_cast<int64_t>(c.rope_scaling), int64_t{c.rope_original_context},
        int64_t{c.tied_embeddings}, int64_t{c.qkv_bias}}) {
    h.UpdatePod(v);
  }
  for (float f : {c.rms_eps, c.rope_theta, c.rope_scale_factor, c.rope_low_freq_factor,
                  c.rope_high_freq_factor}) {
    h.UpdatePod(f);
  }
  for (const auto& [name, t] : m.tensors) {
    h.UpdatePod(static_cast<uint64_t>(name.size()));
    h.Update(name);
    h.UpdatePod(static_cast<uint8_t>(t.dtype));
    h.UpdatePod(static_cast<uint64_t>(t.shape.size()));
    for (int64_t d : t.shape) h.UpdatePod(d);
    h.UpdatePod(static_cast<uint64_t>(t.nbytes));
    h.Update(t.data, t.nbytes);
  }
  return h.HexDigest();
}

absl::Status FinishModel(ModelFile* m) {
  RSD_RETURN_IF_ERROR(ValidateConfig(*m));
  RSD_RETURN_IF_ERROR(ValidateVocab(*m));
  RSD_RETURN_IF_ERROR(ValidateTensors(*m));
  AlignTensors(m);
  if (m->config.source_pairing == RopePairing::kAdjacent) UnpermuteQK(m);
  m->fingerprint = Fingerprint(*m);
  return absl::OkStatus();
}

}  // namespace internal

absl::StatusOr<std::unique_ptr<ModelFile>> LoadModel(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file or directory"));
  }
  if (fs::is_directory(st)) return LoadHfFolder(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open"));
  char magic[4] = {0, 0, 0, 0};
  in.read(magic, 4);
  if (in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0) return LoadGguf(path);
  return absl::InvalidArgumentError(absl::StrCat(
      path, ": not a model: neither a GGUF file (no GGUF magic) nor a Hugging Face folder"));
}

}  // namespace rsd
