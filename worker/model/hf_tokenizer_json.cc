// Hugging Face tokenizer.json -> TokenizerSpec, for the two families we run: byte-level BPE
// (a ByteLevel pre-tokenizer or decoder) and SentencePiece-style BPE (byte_fallback, "\u2581"
// spaces). Token types, ids and the pre-tokenizer name come out as llama.cpp's converter
// (convert_hf_to_gguf.py) would write them into a GGUF.
#include <algorithm>
#include <map>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "storage/common/status.h"
#include "worker/model/tokenizer.h"

namespace rsd {
namespace {

using json = nlohmann::json;

// The Split regexes of tokenizer.json that name a pre-tokenizer we implement.
constexpr std::string_view kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

class Parser {
 public:
  explicit Parser(const std::string& path) : path_(path) {}

  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", std::string(what)));
  }

  absl::StatusOr<json> Parse(const std::string& text, std::string_view what) const {
    json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return Error(absl::StrCat(std::string(what), " is not a JSON object"));
    }
    return j;
  }

 private:
  std::string path_;
};

// The components of a (possibly Sequence) normalizer / pre-tokenizer / decoder, flattened.
std::vector<json> Flatten(const json& node, const char* list_key) {
  std::vector<json> out;
  if (!node.is_object()) return out;
  if (node.value("type", "") == "Sequence" && node.contains(list_key) &&
      node[list_key].is_array()) {
    for (const json& child : node[list_key]) {
      std::vector<json> sub = Flatten(child, list_key);
      out.insert(out.end(), sub.begin(), sub.end());
    }
  } else {
    out.push_back(node);
  }
  return out;
}

bool HasType(const std::vector<json>& parts, std::string_view type) {
  return std::any_of(parts.begin(), parts.end(),
                     [&](const json& p) { return p.value("type", "") == type; });
}

// llama.cpp's pre-tokenizer name for a byte-level model's pre_tokenizer section, or "".
std::string PreTokenizerName(const std::vector<json>& pre) {
  std::vector<std::string> kinds;
  for (const json& p : pre) {
    const std::string type = p.value("type", "");
    if (type == "ByteLevel") {
      kinds.push_back(p.value("use_regex", true) ? "bytelevel-regex" : "bytelevel");
    } else if (type == "Digits") {
      kinds.push_back(p.value("individual_digits", false) ? "digits" : "digit-runs");
    } else if (type == "Split" && p.contains("pattern") && p["pattern"].is_object()) {
      const std::string re = p["pattern"].value("Regex", "");
      kinds.push_back(re == kLlama3Regex ? "llama3" : re == kQwen2Regex ? "qwen2" : "split?");
    } else {
      kinds.push_back("?" + type);
    }
  }
  using V = std::vector<std::string>;
  if (kinds == V{"bytelevel-regex"}) return "gpt-2";
  if (kinds == V{"digits", "bytelevel-regex"}) return "smollm";
  if (kinds == V{"llama3", "bytelevel"}) return "llama3";
  if (kinds == V{"qwen2", "bytelevel"}) return "qwen2";
  return "";
}

// A special-token field of tokenizer_config.json: a string, an AddedToken object, or null.
std::string TokenText(const json& cfg, const char* key) {
  if (!cfg.contains(key)) return "";
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return "";
}

// convert_hf_to_gguf.py's does_token_look_special: added tokens spelled like control tokens are
// control tokens even when not flagged special.
bool LooksSpecial(std::string_view t) {
  return (t.size() >= 4 && t.substr(0, 2) == "<|" && t.substr(t.size() - 2) == "|>");
}

bool IsByteToken(std::string_view t) {
  return t.size() == 6 && t.substr(0, 3) == "<0x" && t[5] == '>' &&
         std::isxdigit(static_cast<unsigned char>(t[3])) &&
         std::isxdigit(static_cast<unsigned char>(t[4]));
}

// Vocabulary, merges and added tokens from the "model" and "added_tokens" sections.
absl::Status ReadVocab(const Parser& p, const json& root, bool spm, TokenizerSpec* spec) {
  const json& model = root["model"];
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return p.Error("model.vocab is missing or not an object");
  }
  std::map<int64_t, std::pair<std::string, TokenType>> by_id;
  for (const auto& [text, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24)) {
      return p.Error(absl::StrCat("model.vocab[\"", text, "\"] is not a valid id"));
    }
    const TokenType type = spm && IsByteToken(text) ? TokenType::kByte : TokenType::kNormal;
    by_id[id.get<int64_t>()] = {text, type};
  }
  if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
    for (const json& t : root["added_tokens"]) {
      if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
          !t.contains("content") || !t["content"].is_string() || t["id"].get<int64_t>() < 0 ||
          t["id"].get<int64_t>() > (1 << 24)) {
        return p.Error(absl::StrCat("malformed added_tokens entry ", t.dump()));
      }
      const std::string text = t["content"].get<std::string>();
      const bool control = t.value("special", false) || LooksSpecial(text);
      by_id[t["id"].get<int64_t>()] = {text,
                                       control ? TokenType::kControl : TokenType::kUserDefined};
    }
  }
  if (by_id.empty()) return p.Error("the vocabulary is empty");
  const int64_t n = by_id.rbegin()->first + 1;
  // Ids are dense in real tokenizers; a few holes get placeholders, a sparse id space is an error
  // (it would make us allocate for ids nobody uses).
  const int64_t holes = n - static_cast<int64_t>(by_id.size());
  if (holes > 1024 + n / 8) {
    return p.Error(
        absl::StrCat("token ids are sparse: ", by_id.size(), " tokens with ids up to ", n - 1));
  }
  spec->tokens.resize(n);
  spec->types.assign(n, TokenType::kUnused);
  for (int64_t i = 0; i < n; ++i) spec->tokens[i] = absl::StrCat("[PAD", i, "]");  // holes
  for (auto& [id, entry] : by_id) {
    spec->tokens[id] = std::move(entry.first);
    spec->types[id] = entry.second;
  }
  if (model.contains("merges") && model["merges"].is_array()) {
    for (const json& m : model["merges"]) {
      if (m.is_string()) {
        spec->merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        spec->merges.push_back(absl::StrCat(m[0].get<std::string>(), " ", m[1].get<std::string>()));
      } else {
        return p.Error(absl::StrCat("malformed merge ", m.dump()));
      }
    }
  }
  return absl::OkStatus();
}

// SentencePiece BPE merges the highest-scoring piece first, and a piece's score is minus its merge
// rank; tokenizer.json keeps only the merges, so the scores are rebuilt from them. Pieces no merge
// produces rank after all of them.
void ScoresFromMerges(TokenizerSpec* spec) {
  const size_t n = spec->tokens.size();
  std::map<std::string, int32_t> id_of;
  for (size_t i = 0; i < n; ++i) id_of[spec->tokens[i]] = static_cast<int32_t>(i);
  spec->scores.assign(n, 0.0f);
  std::vector<bool> scored(n, false);
  for (size_t r = 0; r < spec->merges.size(); ++r) {
    const std::string& m = spec->merges[r];
    const size_t sp = m.find(' ', 1);
    if (sp == std::string::npos) continue;
    auto it = id_of.find(m.substr(0, sp) + m.substr(sp + 1));
    if (it == id_of.end() || scored[it->second]) continue;
    spec->scores[it->second] = -static_cast<float>(r);
    scored[it->second] = true;
  }
  for (size_t i = 0; i < n; ++i) {
    if (!scored[i]) spec->scores[i] = -static_cast<float>(spec->merges.size() + i);
  }
}

int32_t FindToken(const TokenizerSpec& spec, std::initializer_list<std::string_view> texts) {
  for (std::string_view t : texts) {
    auto it = std::find(spec.tokens.begin(), spec.tokens.end(), t);
    if (it != spec.tokens.end()) return static_cast<int32_t>(it - spec.tokens.begin());
  }
  return -1;
}

// The BOS token a TemplateProcessing post-processor puts first in single sequences, or "".
std::string TemplateBos(const json& root) {
  for (const json& pp : Flatten(root.value("post_processor", json()), "processors")) {
    if (pp.value("type", "") != "TemplateProcessing" || !pp.contains("single") ||
        !pp["single"].is_array() || pp["single"].empty()) {
      continue;
    }
    const json& first = pp["single"][0];
    if (first.is_object() && first.contains("SpecialToken") && first["SpecialToken"].is_object()) {
      return first["SpecialToken"].value("id", "");
    }
  }
  return "";
}

// Special ids and add_bos/add_eos: tokenizer_config.json first, then the post-processor, then the
// conventional spellings of each family.
void ReadSpecials(const json& root, const json& cfg, TokenizerSpec* spec) {
  auto id_of = [&](const std::string& text) {
    return text.empty() ? -1 : FindToken(*spec, {text});
  };
  const bool spm = spec->model == "llama";
  const std::string template_bos = TemplateBos(root);
  spec->bos_id = id_of(TokenText(cfg, "bos_token"));
  if (spec->bos_id < 0) spec->bos_id = id_of(template_bos);
  if (spec->bos_id < 0) spec->bos_id = FindToken(*spec, {"<s>", "<|begin_of_text|>"});
  spec->eos_id = id_of(TokenText(cfg, "eos_token"));
  if (spec->eos_id < 0) {
    spec->eos_id = FindToken(*spec, {"</s>", "<|end_of_text|>", "<|endoftext|>"});
  }
  spec->unk_id = id_of(TokenText(cfg, "unk_token"));
  if (spec->unk_id < 0 && root["model"].contains("unk_token") &&
      root["model"]["unk_token"].is_string()) {
    spec->unk_id = id_of(root["model"]["unk_token"].get<std::string>());
  }
  spec->pad_id = id_of(TokenText(cfg, "pad_token"));
  spec->eot_id =
      FindToken(*spec, {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"});
  if (spec->unk_id >= 0) spec->types[spec->unk_id] = TokenType::kUnknown;
  if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) {
    spec->add_bos = cfg["add_bos_token"].get<bool>();
  } else {
    spec->add_bos = !template_bos.empty() || spm;
  }
  spec->add_eos = cfg.value("add_eos_token", false);
  if (spec->bos_id < 0) spec->add_bos = false;
  if (spec->eos_id < 0) spec->add_eos = false;
}

}  // namespace

namespace {

// ParseHfTokenizerJson without the guard against fields of the wrong JSON type (which make
// nlohmann::json throw).
absl::StatusOr<TokenizerSpec> ParseUnguarded(const std::string& path,
                                             const std::string& tokenizer_json,
                                             const std::string& tokenizer_config_json) {
  Parser p(path);
  RSD_ASSIGN_OR_RETURN(json root, p.Parse(tokenizer_json, "tokenizer.json"));
  json cfg = json::object();
  if (!tokenizer_config_json.empty()) {
    RSD_ASSIGN_OR_RETURN(cfg, p.Parse(tokenizer_config_json, "tokenizer_config.json"));
  }
  if (!root.contains("model") || !root["model"].is_object()) {
    return p.Error("no \"model\" section");
  }
  const std::string type = root["model"].value("type", "BPE");
  if (type != "BPE") {
    return p.Error(absl::StrCat("unsupported tokenizer model type \"", type, "\" (only BPE)"));
  }
  const std::vector<json> pre = Flatten(root.value("pre_tokenizer", json()), "pretokenizers");
  const std::vector<json> norm = Flatten(root.value("normalizer", json()), "normalizers");
  const std::vector<json> dec = Flatten(root.value("decoder", json()), "decoders");
  const bool byte_level = HasType(pre, "ByteLevel") || HasType(dec, "ByteLevel");
  const bool sentencepiece = root["model"].value("byte_fallback", false) ||
                             HasType(pre, "Metaspace") || HasType(dec, "Metaspace");
  TokenizerSpec spec;
  if (byte_level) {
    spec.model = "gpt2";
    spec.pre = PreTokenizerName(pre);
    if (spec.pre.empty()) {
      return p.Error(absl::StrCat("unsupported byte-level pre_tokenizer ",
                                  root.value("pre_tokenizer", json()).dump()));
    }
  } else if (sentencepiece) {
    spec.model = "llama";
    bool prefix = false;
    for (const json& n : norm) {
      prefix |= n.value("type", "") == "Prepend" && n.value("prepend", "") == "\xE2\x96\x81";
    }
    for (const json& m : pre) {
      if (m.value("type", "") != "Metaspace") continue;
      prefix |= m.value("add_prefix_space", false) ||
                m.value("prepend_scheme", "never") != std::string("never");
    }
    spec.add_space_prefix = prefix;
  } else {
    return p.Error("neither a byte-level nor a SentencePiece-style BPE tokenizer");
  }
  RSD_RETURN_IF_ERROR(ReadVocab(p, root, spec.model == "llama", &spec));
  if (spec.model == "llama") ScoresFromMerges(&spec);
  ReadSpecials(root, cfg, &spec);
  return spec;
}

}  // namespace

absl::StatusOr<TokenizerSpec> ParseHfTokenizerJson(const std::string& path,
                                                   const std::string& tokenizer_json,
                                                   const std::string& tokenizer_config_json) {
  // A field of another type than expected (found by tests/fuzz/fuzz_hf_json: a model "type"
  // that is an array) is a malformed file, not a crash.
  try {
    return ParseUnguarded(path, tokenizer_json, tokenizer_config_json);
  } catch (const std::exception& e) {  // json::type_error and the like
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": a field of tokenizer.json has an unexpected type (", e.what(), ")"));
  }
}

}  // namespace rsd
