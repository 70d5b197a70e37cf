// A model as loaded from disk: GGUF file or Hugging Face folder (config.json, *.safetensors,
// tokenizer.json). Loaders validate everything and return errors naming the path and the problem.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"
#include "storage/common/file_util.h"
#include "worker/model/model_config.h"
#include "worker/model/tokenizer_spec.h"

namespace rsd {

// A tensor's bytes inside a ModelFile. `shape` is outermost first (row-major, numpy order):
// a weight matrix is [rows = out_features, cols = in_features]; GGUF lists dims innermost first,
// the GGUF loader reverses them. Rows are contiguous; quantized rows are whole blocks.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // owned by the ModelFile (mapping or owned buffer)
  size_t nbytes = 0;

  int64_t rows() const { return shape.size() == 1 ? 1 : shape[0]; }
  int64_t cols() const { return shape.back(); }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Canonical tensor names (GGUF spelling without ".weight"/".bias" split ambiguity):
//   "token_embd.weight" [vocab, d]          "output_norm.weight" [d]
//   "output.weight" [vocab, d] (absent when tied)
//   "blk.N.attn_norm.weight" [d]            "blk.N.ffn_norm.weight" [d]
//   "blk.N.attn_q.weight" [n_heads*hd, d]   "blk.N.attn_k.weight" [n_kv*hd, d]
//   "blk.N.attn_v.weight" [n_kv*hd, d]      "blk.N.attn_output.weight" [d, n_heads*hd]
//   "blk.N.attn_{q,k,v}.bias" (qkv_bias)    "blk.N.ffn_{gate,up}.weight" [ff, d]
//   "blk.N.ffn_down.weight" [d, ff]         "rope_freqs.weight" [hd/2] (optional, Llama 3.1)
// Q/K rows are in rotate-half (HF) order whatever the file used (see model_config.h).
struct ModelFile {
  std::string path;
  std::string format;  // "gguf" or "safetensors"
  ModelConfig config;
  TokenizerSpec tokenizer;
  std::string chat_template;  // Jinja source from the files; empty if the model has none
  std::map<std::string, TensorView> tensors;

  // Hash of the config and every tensor's name, type, shape and bytes (32 hex digits).
  std::string fingerprint;

  // Storage behind the views.
  std::vector<std::unique_ptr<MappedFile>> mappings;
  std::vector<std::vector<uint8_t>> owned;

  const TensorView* Find(const std::string& name) const {
    auto it = tensors.find(name);
    return it == tensors.end() ? nullptr : &it->second;
  }
};

// Loads a GGUF file or a Hugging Face folder, chosen by what `path` is. Errors:
// NOT_FOUND (no such path), INVALID_ARGUMENT (malformed: the message names the file and problem),
// UNIMPLEMENTED (a valid file using something we do not support, e.g. an unknown tensor type).
absl::StatusOr<std::unique_ptr<ModelFile>> LoadModel(const std::string& path);

absl::StatusOr<std::unique_ptr<ModelFile>> LoadGguf(const std::string& path);
absl::StatusOr<std::unique_ptr<ModelFile>> LoadHfFolder(const std::string& dir);

}  // namespace rsd
