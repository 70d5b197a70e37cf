// Tiny synthetic Llama-family models written as REAL files: a GGUF (as llama.cpp's converter would
// write it) and a Hugging Face folder (config.json, model.safetensors, tokenizer.json,
// tokenizer_config.json) holding the same model. Weights come from a portable generator
// (splitmix64, no std:: distributions), so the same options give byte-identical files on every
// machine; tests/goldens/synthetic.json records their sha256 next to llama.cpp's outputs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/dtype.h"
#include "tests/support/gguf_writer.h"
#include "worker/model/model_config.h"
#include "worker/model/tokenizer_spec.h"

namespace rsd::testing {

// splitmix64: the one random source of synthetic data (portable, unlike std:: distributions).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1) on a grid of 2^-23 (exact in float).
  float Uniform() {
    return static_cast<float>(static_cast<int32_t>(Next() >> 40) - (1 << 23)) * (1.0f / (1 << 23));
  }

 private:
  uint64_t state_;
};

struct SyntheticModelOptions {
  std::string name = "synthetic";
  std::string architecture = "llama";  // "llama" (Q/K rows permuted in the GGUF) or "qwen2"
  int n_layers = 2;
  int d_model = 64;
  int n_heads = 4;
  int n_kv_heads = 4;  // n_heads: MHA; 1: MQA; otherwise GQA
  int head_dim = 0;    // 0: d_model / n_heads; else written as attention.key_length / head_dim
  int d_ff = 128;
  int vocab = 300;  // at least 262: <unk>, <s>, </s>, 256 byte tokens, then pieces
  int context_length = 256;
  bool qkv_bias = false;
  bool tied = false;
  // Matrices are stored as this; norms and biases stay F32 in the GGUF (rounded through F16/BF16
  // for those types so the HF copy, stored entirely in F16/BF16, holds the same values). The HF
  // copy of a block-quantized model holds the dequantized values as F32.
  DType weight_dtype = DType::kF32;
  float rope_theta = 10000.0f;
  float rms_eps = 1e-5f;
  uint64_t seed = 1;
};

// One weight of the model, in canonical (rotate-half, HF) row order.
struct SyntheticTensor {
  std::string name;            // canonical name ("blk.0.attn_q.weight")
  std::string hf_name;         // "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;  // outermost first
  DType dtype = DType::kF32;   // as the GGUF stores it
  std::vector<uint8_t> data;   // the GGUF payload before llama.cpp's Q/K permutation
  std::vector<float> values;   // exactly what `data` decodes to
};

class SyntheticModel {
 public:
  // The options must be sane (they are test inputs; RSD_CHECK otherwise).
  explicit SyntheticModel(SyntheticModelOptions options);

  const SyntheticModelOptions& options() const { return options_; }
  const std::vector<SyntheticTensor>& tensors() const { return tensors_; }
  const SyntheticTensor* Find(const std::string& name) const;
  int head_dim() const;

  // What a loader should report for the GGUF (`name` = options.name, `source_pairing` as the
  // GGUF pairs; the HF copy differs only in those two fields).
  ModelConfig ExpectedConfig() const;
  // The SentencePiece-style ("llama") vocabulary as the GGUF stores it.
  TokenizerSpec ExpectedTokenizer() const;

  // The GGUF, ready to write or to break: metadata and tensors as llama.cpp's converter writes.
  GgufBuilder MakeGguf() const;
  std::string GgufBytes() const { return MakeGguf().Build().bytes; }
  absl::Status WriteGguf(const std::string& path) const;

  // The Hugging Face folder's files; WriteHfFolder creates `dir` and writes all four.
  std::string ConfigJson() const;
  std::string SafetensorsBytes() const;
  std::string TokenizerJson() const;
  std::string TokenizerConfigJson() const;
  absl::Status WriteHfFolder(const std::string& dir) const;

 private:
  void AddTensor(const std::string& name, const std::string& hf_name, std::vector<int64_t> shape,
                 float scale, float offset);
  DType HfDType() const;

  SyntheticModelOptions options_;
  std::vector<SyntheticTensor> tensors_;
};

// The named synthetic models every test, rsd-mkmodel and tools/goldens/synthetic_goldens.py use.
struct SyntheticCatalogEntry {
  std::string name;
  std::string description;
  SyntheticModelOptions options;
};
const std::vector<SyntheticCatalogEntry>& SyntheticModelCatalog();
// nullptr if no such name.
const SyntheticCatalogEntry* FindSyntheticModel(const std::string& name);

// "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1" <-> DType (nullopt if unknown).
std::optional<DType> ParseDTypeName(const std::string& s);
std::string LowerDTypeName(DType t);

// The pieces of the synthetic vocabulary, id order.
std::vector<std::string> SyntheticVocab(int vocab);

}  // namespace rsd::testing
