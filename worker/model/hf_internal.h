// Hugging Face folder pieces, internal to worker/model: config.json, tokenizer_config.json's chat
// template, and the mapping of HF tensor names onto our canonical (GGUF-style) names.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "worker/model/model_config.h"

namespace rsd::hf {

// config.json (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM) -> config, with
// `tied_embeddings` from tie_word_embeddings (default false). `name` and `qkv_bias` are left to
// the caller, which sees the folder and the tensors. Errors name `path`: INVALID_ARGUMENT (bad
// JSON, a wrongly typed or missing field), UNIMPLEMENTED (another architecture, YaRN or dynamic
// RoPE scaling, sliding windows, partial rotary).
absl::StatusOr<ModelConfig> ParseConfigJson(const std::string& path, const std::string& text);

// The "chat_template" of tokenizer_config.json ("" if none; the "default" entry of a list).
absl::StatusOr<std::string> ChatTemplateFromTokenizerConfig(const std::string& path,
                                                            const std::string& text);

// "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight", etc. Returns "" for tensors
// that carry nothing (rotary_emb.inv_freq); unknown names come back unchanged, so validation
// reports them by their own name.
std::string CanonicalTensorName(const std::string& hf_name);

}  // namespace rsd::hf
