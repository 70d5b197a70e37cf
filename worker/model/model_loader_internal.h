// Shared by the GGUF and Hugging Face loaders (internal to worker/model).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "worker/model/model_file.h"

namespace rsd::internal {

// Metadata past these limits is refused as absurd (INVALID_ARGUMENT).
inline constexpr int kMaxLayers = 1024;
inline constexpr int kMaxModelDim = 65536;
inline constexpr int kMaxHeads = 4096;
inline constexpr int kMaxHeadDim = 4096;
inline constexpr int kMaxFeedForward = 1 << 20;
inline constexpr int kMaxVocab = 10'000'000;
inline constexpr int kMaxContext = 10'000'000;

// The common second half of every loader, on a model whose config, tokenizer and tensor views are
// filled in: checks the config (limits, consistency), every tensor (present, exact shape,
// supported type, nothing unexpected) and the vocabulary; copies misaligned tensors into owned
// buffers; undoes llama.cpp's Q/K row permutation when `config.source_pairing` is kAdjacent; and
// computes `fingerprint`. Errors name `model->path`: INVALID_ARGUMENT (malformed or absurd) or
// UNIMPLEMENTED (valid but unsupported: partial RoPE, a quantized norm, an unknown tensor).
absl::Status FinishModel(ModelFile* model);

// The fingerprint of an already validated model (what FinishModel stores).
std::string Fingerprint(const ModelFile& model);

}  // namespace rsd::internal
