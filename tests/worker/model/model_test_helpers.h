// Helpers shared by the model-file tests: writing catalog models to temp files, comparing configs
// and tensors with what the synthetic writer meant.
#pragma once

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/common/file_util.h"
#include "tests/support/ggml_quants.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "worker/model/model_file.h"

namespace rsd::testing {

// Every field except the ones that depend on the file (name, source_pairing) unless `all`.
inline void ExpectConfigEq(const ModelConfig& got, const ModelConfig& want, bool all) {
  EXPECT_EQ(got.architecture, want.architecture);
  if (all) {
    EXPECT_EQ(got.name, want.name);
    EXPECT_EQ(got.source_pairing, want.source_pairing);
  }
  EXPECT_EQ(got.n_layers, want.n_layers);
  EXPECT_EQ(got.d_model, want.d_model);
  EXPECT_EQ(got.n_heads, want.n_heads);
  EXPECT_EQ(got.n_kv_heads, want.n_kv_heads);
  EXPECT_EQ(got.head_dim, want.head_dim);
  EXPECT_EQ(got.d_ff, want.d_ff);
  EXPECT_EQ(got.vocab_size, want.vocab_size);
  EXPECT_EQ(got.context_length, want.context_length);
  EXPECT_EQ(got.rms_eps, want.rms_eps);
  EXPECT_EQ(got.rope_theta, want.rope_theta);
  EXPECT_EQ(got.rope_dim, want.rope_dim);
  EXPECT_EQ(got.rope_scaling, want.rope_scaling);
  EXPECT_EQ(got.rope_scale_factor, want.rope_scale_factor);
  EXPECT_EQ(got.tied_embeddings, want.tied_embeddings);
  EXPECT_EQ(got.qkv_bias, want.qkv_bias);
}

// Decoded values of a loaded tensor, row by row.
inline std::vector<float> Dequantize(const TensorView& t) {
  std::vector<float> out;
  const size_t row_bytes = t.nbytes / static_cast<size_t>(t.rows());
  for (int64_t r = 0; r < t.rows(); ++r) {
    std::vector<float> row = DequantizeRow(t.dtype, t.data + r * row_bytes, t.cols());
    out.insert(out.end(), row.begin(), row.end());
  }
  return out;
}

inline bool SameBytes(const TensorView& a, const TensorView& b) {
  return a.nbytes == b.nbytes && std::memcmp(a.data, b.data, a.nbytes) == 0;
}

inline bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Writes `model` as <dir>/<name>.gguf and <dir>/<name>-hf; returns the two paths.
struct WrittenModel {
  std::string gguf;
  std::string hf;
};
inline WrittenModel WriteBoth(const SyntheticModel& model, const std::string& dir) {
  WrittenModel w{dir + "/" + model.options().name + ".gguf",
                 dir + "/" + model.options().name + "-hf"};
  EXPECT_TRUE(model.WriteGguf(w.gguf).ok());
  EXPECT_TRUE(model.WriteHfFolder(w.hf).ok());
  return w;
}

inline std::string WriteTemp(const std::string& dir, const std::string& name,
                             const std::string& bytes) {
  std::string path = dir + "/" + name;
  EXPECT_TRUE(WriteStringToFile(path, bytes).ok());
  return path;
}

}  // namespace rsd::testing
