// The architecture of a Llama-family decoder, as read from GGUF metadata or config.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rsd {

// How RoPE pairs the dimensions of a head. Internally the engine always uses kHalf (rotate-half,
// Hugging Face order: dimension i rotates with i + head_dim/2). Loaders bring weights into that
// order: llama.cpp's converter permutes the Q/K rows of `llama`-architecture GGUFs for adjacent
// pairing (2i, 2i+1), and the GGUF loader undoes that permutation, so a GGUF and a safetensors copy
// of one model hold identical weights in memory. `source_pairing` records what the file used.
enum class RopePairing : uint8_t { kAdjacent = 0, kHalf = 1 };

enum class RopeScaling : uint8_t { kNone = 0, kLinear = 1, kLlama3 = 2 };

struct ModelConfig {
  std::string architecture;  // "llama", "mistral", "qwen2" (GGUF general.architecture)
  std::string name;          // general.name or the folder name
  int n_layers = 0;
  int d_model = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;        // d_model / n_heads unless the file says otherwise
  int d_ff = 0;
  int vocab_size = 0;
  int context_length = 0;  // the model's trained context
  float rms_eps = 1e-5f;
  float rope_theta = 10000.0f;
  int rope_dim = 0;        // dimensions rotated per head (== head_dim for every supported model)
  RopePairing source_pairing = RopePairing::kHalf;
  RopeScaling rope_scaling = RopeScaling::kNone;
  float rope_scale_factor = 1.0f;        // linear: positions are divided by this
  // Llama 3 scaling parameters (config.json rope_scaling), used when no rope_freqs tensor exists.
  float rope_low_freq_factor = 1.0f;
  float rope_high_freq_factor = 4.0f;
  int rope_original_context = 8192;
  bool tied_embeddings = false;  // no separate output matrix: logits use token_embd
  bool qkv_bias = false;         // Qwen2
};

}  // namespace rsd
