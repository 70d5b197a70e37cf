// config.json and tokenizer_config.json of a Hugging Face folder, and HF -> canonical tensor names.
// nlohmann::json never throws out of here: parse errors and type mismatches become statuses.
#include <cmath>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "storage/common/status.h"
#include "worker/model/hf_internal.h"

namespace rsd::hf {
namespace {

using json = nlohmann::json;

absl::StatusOr<json> ParseJson(const std::string& path, const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": bad JSON: ", e.what()));
  }
}

// Checked field access on one JSON object; a null field counts as absent.
class Fields {
 public:
  Fields(const std::string& path, const json& obj) : path_(path), obj_(obj) {}

  absl::Status Error(const std::string& key, const std::string& problem) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": field '", key, "' ", problem));
  }
  const json* Find(const std::string& key) const {
    auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }
  absl::StatusOr<std::optional<int>> Int(const std::string& key) const {
    const json* v = Find(key);
    if (v == nullptr) return std::optional<int>();
    if (v->is_number_unsigned()) {
      uint64_t u = v->get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
        return Error(key, absl::StrCat("= ", u, " is out of range"));
      }
      return std::optional<int>(static_cast<int>(u));
    }
    if (v->is_number_integer())
      return Error(key, absl::StrCat("= ", v->get<int64_t>(), " is negative"));
    return Error(key, "is not an integer");
  }
  absl::StatusOr<int> RequiredInt(const std::string& key) const {
    RSD_ASSIGN_OR_RETURN(std::optional<int> v, Int(key));
    if (!v) return Error(key, "is missing");
    return *v;
  }
  absl::StatusOr<std::optional<float>> Float(const std::string& key) const {
    const json* v = Find(key);
    if (v == nullptr) return std::optional<float>();
    if (!v->is_number()) return Error(key, "is not a number");
    double d = v->get<double>();
    if (!std::isfinite(d) || std::fabs(d) > 3e38) return Error(key, "is not a finite float");
    return std::optional<float>(static_cast<float>(d));
  }
  absl::StatusOr<std::optional<bool>> Bool(const std::string& key) const {
    const json* v = Find(key);
    if (v == nullptr) return std::optional<bool>();
    if (!v->is_boolean()) return Error(key, "is not a boolean");
    return std::optional<bool>(v->get<bool>());
  }
  absl::StatusOr<std::optional<std::string>> String(const std::string& key) const {
    const json* v = Find(key);
    if (v == nullptr) return std::optional<std::string>();
    if (!v->is_string()) return Error(key, "is not a string");
    return std::optional<std::string>(v->get<std::string>());
  }

 private:
  const std::string& path_;
  const json& obj_;
};

absl::StatusOr<std::string> Architecture(const std::string& path, const Fields& f) {
  static const std::pair<const char*, const char*> kArchs[] = {{"LlamaForCausalLM", "llama"},
                                                               {"MistralForCausalLM", "mistral"},
                                                               {"Qwen2ForCausalLM", "qwen2"}};
  if (const json* a = f.Find("architectures"); a != nullptr) {
    if (!a->is_array() || a->empty() || !(*a)[0].is_string()) {
      return f.Error("architectures", "is not a list of names");
    }
    std::string first = (*a)[0].get<std::string>();
    for (const auto& [hf, ours] : kArchs) {
      if (first == hf) return std::string(ours);
    }
    return absl::UnimplementedError(
        absl::StrCat(path, ": architecture '", first, "' is not supported"));
  }
  RSD_ASSIGN_OR_RETURN(std::optional<std::string> type, f.String("model_type"));
  if (!type) return f.Error("architectures", "is missing (and so is model_type)");
  for (const auto& [hf, ours] : kArchs) {
    if (*type == ours) return *type;
  }
  return absl::UnimplementedError(
      absl::StrCat(path, ": model_type '", *type, "' is not supported"));
}

absl::Status ReadRopeScaling(const std::string& path, const Fields& f, ModelConfig* c) {
  const json* rs = f.Find("rope_scaling");
  if (rs == nullptr) return absl::OkStatus();
  if (!rs->is_object()) return f.Error("rope_scaling", "is not an object");
  Fields s(path, *rs);
  RSD_ASSIGN_OR_RETURN(std::optional<std::string> type, s.String("rope_type"));
  if (!type) {
    RSD_ASSIGN_OR_RETURN(type, s.String("type"));
  }
  std::string t = type.value_or("default");
  if (t == "default") return absl::OkStatus();
  if (t != "linear" && t != "llama3") {
    return absl::UnimplementedError(
        absl::StrCat(path, ": rope_scaling type '", t, "' is not supported"));
  }
  RSD_ASSIGN_OR_RETURN(std::optional<float> factor, s.Float("factor"));
  if (!factor || !(*factor > 0.0f)) return f.Error("rope_scaling.factor", "must be positive");
  c->rope_scale_factor = *factor;
  c->rope_scaling = t == "linear" ? RopeScaling::kLinear : RopeScaling::kLlama3;
  if (t == "llama3") {
    RSD_ASSIGN_OR_RETURN(std::optional<float> low, s.Float("low_freq_factor"));
    RSD_ASSIGN_OR_RETURN(std::optional<float> high, s.Float("high_freq_factor"));
    RSD_ASSIGN_OR_RETURN(std::optional<int> orig, s.Int("original_max_position_embeddings"));
    c->rope_low_freq_factor = low.value_or(c->rope_low_freq_factor);
    c->rope_high_freq_factor = high.value_or(c->rope_high_freq_factor);
    c->rope_original_context = orig.value_or(c->rope_original_context);
  }
  return absl::OkStatus();
}

absl::Status RefuseUnsupported(const std::string& path, const Fields& f) {
  RSD_ASSIGN_OR_RETURN(std::optional<bool> sliding, f.Bool("use_sliding_window"));
  if (sliding.value_or(false)) {
    return absl::UnimplementedError(
        absl::StrCat(path, ": sliding-window attention is not supported"));
  }
  RSD_ASSIGN_OR_RETURN(std::optional<float> partial, f.Float("partial_rotary_factor"));
  if (partial && *partial != 1.0f) {
    return absl::UnimplementedError(
        absl::StrCat(path, ": partial rotary embeddings are not supported"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseConfigJson(const std::string& path, const std::string& text) {
  RSD_ASSIGN_OR_RETURN(json j, ParseJson(path, text));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  Fields f(path, j);
  ModelConfig c;
  RSD_ASSIGN_OR_RETURN(c.architecture, Architecture(path, f));
  c.source_pairing = RopePairing::kHalf;
  RSD_ASSIGN_OR_RETURN(c.n_layers, f.RequiredInt("num_hidden_layers"));
  RSD_ASSIGN_OR_RETURN(c.d_model, f.RequiredInt("hidden_size"));
  RSD_ASSIGN_OR_RETURN(c.n_heads, f.RequiredInt("num_attention_heads"));
  RSD_ASSIGN_OR_RETURN(std::optional<int> n_kv, f.Int("num_key_value_heads"));
  c.n_kv_heads = n_kv.value_or(c.n_heads);
  RSD_ASSIGN_OR_RETURN(c.d_ff, f.RequiredInt("intermediate_size"));
  RSD_ASSIGN_OR_RETURN(c.vocab_size, f.RequiredInt("vocab_size"));
  RSD_ASSIGN_OR_RETURN(c.context_length, f.RequiredInt("max_position_embeddings"));
  RSD_ASSIGN_OR_RETURN(std::optional<int> head_dim, f.Int("head_dim"));
  if (!head_dim && c.n_heads > 0 && c.d_model % c.n_heads != 0) {
    return f.Error("hidden_size", absl::StrCat("= ", c.d_model, " is not a multiple of ",
                                               "num_attention_heads ", c.n_heads));
  }
  c.head_dim = head_dim ? *head_dim : (c.n_heads > 0 ? c.d_model / c.n_heads : 0);
  c.rope_dim = c.head_dim;
  RSD_ASSIGN_OR_RETURN(std::optional<float> eps, f.Float("rms_norm_eps"));
  c.rms_eps = eps.value_or(1e-6f);
  RSD_ASSIGN_OR_RETURN(std::optional<float> theta, f.Float("rope_theta"));
  c.rope_theta = theta.value_or(10000.0f);
  RSD_RETURN_IF_ERROR(ReadRopeScaling(path, f, &c));
  RSD_RETURN_IF_ERROR(RefuseUnsupported(path, f));
  RSD_ASSIGN_OR_RETURN(std::optional<bool> tied, f.Bool("tie_word_embeddings"));
  c.tied_embeddings = tied.value_or(false);
  RSD_ASSIGN_OR_RETURN(std::optional<std::string> dtype, f.String("torch_dtype"));
  return c;
}

absl::StatusOr<std::string> ChatTemplateFromTokenizerConfig(const std::string& path,
                                                            const std::string& text) {
  if (text.empty()) return std::string();
  RSD_ASSIGN_OR_RETURN(json j, ParseJson(path, text));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {  // [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]
    const json* pick = nullptr;
    for (const json& e : *it) {
      if (!e.is_object() || !e.contains("template") || !e["template"].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": bad chat_template list entry"));
      }
      if (pick == nullptr || (e.contains("name") && e["name"] == "default")) pick = &e;
    }
    return pick == nullptr ? std::string() : (*pick)["template"].get<std::string>();
  }
  return absl::InvalidArgumentError(absl::StrCat(path, ": field 'chat_template' is not a string"));
}

std::string CanonicalTensorName(const std::string& hf) {
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  const std::string prefix = "model.layers.";
  if (hf.rfind(prefix, 0) != 0) return hf;
  size_t dot = hf.find('.', prefix.size());
  int layer = 0;
  if (dot == std::string::npos ||
      !absl::SimpleAtoi(hf.substr(prefix.size(), dot - prefix.size()), &layer) || layer < 0) {
    return hf;
  }
  static const std::pair<const char*, const char*> kLayer[] = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
      {"self_attn.rotary_emb.inv_freq", ""},
  };
  std::string rest = hf.substr(dot + 1);
  for (const auto& [from, to] : kLayer) {
    if (rest == from) return *to == '\0' ? std::string() : absl::StrCat("blk.", layer, ".", to);
  }
  return hf;
}

}  // namespace rsd::hf
