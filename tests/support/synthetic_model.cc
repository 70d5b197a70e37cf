#include "tests/support/synthetic_model.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "storage/common/file_util.h"
#include "storage/common/status.h"
#include "tests/support/ggml_quants.h"

namespace rsd::testing {
namespace {

using json = nlohmann::json;

// FNV-1a: a per-tensor seed from its name, so tensors do not depend on each other's order.
uint64_t NameHash(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// The shortest decimal that reads back as `f`, as a double, so config.json says 1e-05, not
// 9.999999747378752e-06 (and reads back as the same float the GGUF holds).
double ShortestDouble(float f) {
  for (int prec = 1; prec <= 9; ++prec) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.*g", prec, static_cast<double>(f));
    if (std::strtof(buf, nullptr) == f) return std::strtod(buf, nullptr);
  }
  return f;
}

int GgufFileType(DType t) {
  switch (t) {
    case DType::kF32:
      return 0;
    case DType::kF16:
      return 1;
    case DType::kQ4_0:
      return 2;
    case DType::kQ4_1:
      return 3;
    case DType::kQ8_0:
      return 7;
    case DType::kBF16:
      return 32;
  }
  return 0;
}

// llama.cpp's convert_hf_to_gguf.py `permute`: row (h*hd + s*hd/2 + i) moves to (h*hd + 2i + s).
std::string PermuteRows(const SyntheticTensor& t, int n_heads) {
  const int64_t rows = t.shape[0];
  const size_t unit = t.data.size() / static_cast<size_t>(rows);
  const int64_t hd = rows / n_heads, half = hd / 2;
  std::string out(t.data.size(), '\0');
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t s = 0; s < 2; ++s) {
      for (int64_t i = 0; i < half; ++i) {
        std::memcpy(out.data() + (h * hd + 2 * i + s) * unit,
                    t.data.data() + (h * hd + s * half + i) * unit, unit);
      }
    }
  }
  return out;
}

const char* HfDTypeName(DType t) {
  return t == DType::kF16 ? "F16" : t == DType::kBF16 ? "BF16" : "F32";
}

const char* TorchDTypeName(DType t) {
  return t == DType::kF16 ? "float16" : t == DType::kBF16 ? "bfloat16" : "float32";
}

}  // namespace

std::vector<std::string> SyntheticVocab(int vocab) {
  std::vector<std::string> v = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) v.push_back(absl::StrFormat("<0x%02X>", b));
  const std::string letters = "etaoinshrdlucmfwypvbgkqjxz";
  std::vector<std::string> pieces = {"\xe2\x96\x81"};  // U+2581, SentencePiece's space
  for (char c : letters) pieces.push_back(std::string(1, c));
  // Then every piece extended by a letter, breadth first: each is a merge of two earlier pieces.
  for (size_t k = 0; v.size() + pieces.size() < static_cast<size_t>(vocab); ++k) {
    for (char c : letters) pieces.push_back(pieces[k] + c);
  }
  for (const std::string& p : pieces) {
    if (v.size() == static_cast<size_t>(vocab)) break;
    v.push_back(p);
  }
  return v;
}

SyntheticModel::SyntheticModel(SyntheticModelOptions o) : options_(std::move(o)) {
  const SyntheticModelOptions& p = options_;
  RSD_CHECK(p.architecture == "llama" || p.architecture == "qwen2");
  RSD_CHECK(p.n_layers > 0 && p.n_heads > 0 && p.n_kv_heads > 0 && p.n_heads % p.n_kv_heads == 0);
  RSD_CHECK(p.head_dim != 0 || p.d_model % p.n_heads == 0);
  RSD_CHECK(head_dim() % 2 == 0 && p.vocab >= 262 && p.d_ff > 0);
  const int64_t d = p.d_model, q = int64_t{p.n_heads} * head_dim();
  const int64_t kv = int64_t{p.n_kv_heads} * head_dim(), ff = p.d_ff, v = p.vocab;
  auto fan = [](int64_t n) { return static_cast<float>(std::sqrt(3.0 / static_cast<double>(n))); };
  // Tied: logits = E * norm(x) with x = E[token] + layers, so large embeddings would make every
  // token predict itself; small ones let the layers decide, and a larger final norm restores the
  // logits' scale.
  AddTensor("token_embd.weight", "model.embed_tokens.weight", {v, d}, p.tied ? 0.12f : 1.0f, 0.0f);
  for (int i = 0; i < p.n_layers; ++i) {
    std::string b = absl::StrCat("blk.", i, "."), h = absl::StrCat("model.layers.", i, ".");
    AddTensor(b + "attn_norm.weight", h + "input_layernorm.weight", {d}, 0.2f, 1.0f);
    AddTensor(b + "attn_q.weight", h + "self_attn.q_proj.weight", {q, d}, fan(d), 0.0f);
    if (p.qkv_bias) AddTensor(b + "attn_q.bias", h + "self_attn.q_proj.bias", {q}, 0.2f, 0.0f);
    AddTensor(b + "attn_k.weight", h + "self_attn.k_proj.weight", {kv, d}, fan(d), 0.0f);
    if (p.qkv_bias) AddTensor(b + "attn_k.bias", h + "self_attn.k_proj.bias", {kv}, 0.2f, 0.0f);
    AddTensor(b + "attn_v.weight", h + "self_attn.v_proj.weight", {kv, d}, fan(d), 0.0f);
    if (p.qkv_bias) AddTensor(b + "attn_v.bias", h + "self_attn.v_proj.bias", {kv}, 0.2f, 0.0f);
    AddTensor(b + "attn_output.weight", h + "self_attn.o_proj.weight", {d, q}, 0.5f * fan(q), 0.0f);
    AddTensor(b + "ffn_norm.weight", h + "post_attention_layernorm.weight", {d}, 0.2f, 1.0f);
    AddTensor(b + "ffn_gate.weight", h + "mlp.gate_proj.weight", {ff, d}, fan(d), 0.0f);
    AddTensor(b + "ffn_up.weight", h + "mlp.up_proj.weight", {ff, d}, fan(d), 0.0f);
    AddTensor(b + "ffn_down.weight", h + "mlp.down_proj.weight", {d, ff}, 0.5f * fan(ff), 0.0f);
  }
  AddTensor("output_norm.weight", "model.norm.weight", {d}, p.tied ? 0.5f : 0.2f,
            p.tied ? 3.0f : 1.0f);
  if (!p.tied) AddTensor("output.weight", "lm_head.weight", {v, d}, 3.0f * fan(d), 0.0f);
}

int SyntheticModel::head_dim() const {
  return options_.head_dim != 0 ? options_.head_dim : options_.d_model / options_.n_heads;
}

DType SyntheticModel::HfDType() const {
  DType w = options_.weight_dtype;
  return (w == DType::kF16 || w == DType::kBF16) ? w : DType::kF32;
}

// values = offset + scale * U(-1, 1), then stored: matrices as the weight dtype, vectors as F32
// holding values that the HF dtype represents exactly.
void SyntheticModel::AddTensor(const std::string& name, const std::string& hf_name,
                               std::vector<int64_t> shape, float scale, float offset) {
  SyntheticTensor t;
  t.name = name;
  t.hf_name = hf_name;
  t.shape = std::move(shape);
  const bool matrix = t.shape.size() == 2;
  const int64_t rows = matrix ? t.shape[0] : 1, cols = t.shape.back();
  SplitMix64 rng(NameHash(name) ^ (options_.seed * 0x9e3779b97f4a7c15ull));
  std::vector<float> raw(static_cast<size_t>(rows * cols));
  for (float& x : raw) x = offset + scale * rng.Uniform();
  t.dtype = matrix ? options_.weight_dtype : DType::kF32;
  if (!matrix) raw = RoundTrip(HfDType(), raw);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<uint8_t> row = QuantizeRow(t.dtype, raw.data() + r * cols, cols);
    std::vector<float> back = DequantizeRow(t.dtype, row.data(), cols);
    t.data.insert(t.data.end(), row.begin(), row.end());
    t.values.insert(t.values.end(), back.begin(), back.end());
  }
  tensors_.push_back(std::move(t));
}

const SyntheticTensor* SyntheticModel::Find(const std::string& name) const {
  for (const SyntheticTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

ModelConfig SyntheticModel::ExpectedConfig() const {
  const SyntheticModelOptions& p = options_;
  ModelConfig c;
  c.architecture = p.architecture;
  c.name = p.name;
  c.n_layers = p.n_layers;
  c.d_model = p.d_model;
  c.n_heads = p.n_heads;
  c.n_kv_heads = p.n_kv_heads;
  c.head_dim = head_dim();
  c.d_ff = p.d_ff;
  c.vocab_size = p.vocab;
  c.context_length = p.context_length;
  c.rms_eps = p.rms_eps;
  c.rope_theta = p.rope_theta;
  c.rope_dim = head_dim();
  c.source_pairing = p.architecture == "llama" ? RopePairing::kAdjacent : RopePairing::kHalf;
  c.tied_embeddings = p.tied;
  c.qkv_bias = p.qkv_bias;
  return c;
}

TokenizerSpec SyntheticModel::ExpectedTokenizer() const {
  TokenizerSpec t;
  t.model = "llama";
  t.pre = "default";
  t.tokens = SyntheticVocab(options_.vocab);
  for (size_t i = 0; i < t.tokens.size(); ++i) {
    t.scores.push_back(i < 259 ? 0.0f : -static_cast<float>(i - 259));
    t.types.push_back(i == 0    ? TokenType::kUnknown
                      : i < 3   ? TokenType::kControl
                      : i < 259 ? TokenType::kByte
                                : TokenType::kNormal);
  }
  t.bos_id = 1;
  t.eos_id = 2;
  t.unk_id = 0;
  t.add_bos = true;
  t.add_space_prefix = true;
  return t;
}

GgufBuilder SyntheticModel::MakeGguf() const {
  const SyntheticModelOptions& p = options_;
  const std::string& a = p.architecture;
  GgufBuilder g;
  g.SetString("general.architecture", a);
  g.SetString("general.name", p.name);
  g.SetU32("general.alignment", 32);
  g.SetU32("general.file_type", static_cast<uint32_t>(GgufFileType(p.weight_dtype)));
  g.SetU32(a + ".context_length", static_cast<uint32_t>(p.context_length));
  g.SetU32(a + ".embedding_length", static_cast<uint32_t>(p.d_model));
  g.SetU32(a + ".block_count", static_cast<uint32_t>(p.n_layers));
  g.SetU32(a + ".feed_forward_length", static_cast<uint32_t>(p.d_ff));
  g.SetU32(a + ".rope.dimension_count", static_cast<uint32_t>(head_dim()));
  g.SetU32(a + ".attention.head_count", static_cast<uint32_t>(p.n_heads));
  g.SetU32(a + ".attention.head_count_kv", static_cast<uint32_t>(p.n_kv_heads));
  if (p.head_dim != 0) {
    g.SetU32(a + ".attention.key_length", static_cast<uint32_t>(p.head_dim));
    g.SetU32(a + ".attention.value_length", static_cast<uint32_t>(p.head_dim));
  }
  g.SetF32(a + ".attention.layer_norm_rms_epsilon", p.rms_eps);
  g.SetF32(a + ".rope.freq_base", p.rope_theta);
  g.SetU32(a + ".vocab_size", static_cast<uint32_t>(p.vocab));
  TokenizerSpec t = ExpectedTokenizer();
  std::vector<int32_t> types;
  for (TokenType ty : t.types) types.push_back(static_cast<int32_t>(ty));
  g.SetString("tokenizer.ggml.model", "llama");
  g.SetString("tokenizer.ggml.pre", "default");
  g.SetStringArray("tokenizer.ggml.tokens", t.tokens);
  g.SetF32Array("tokenizer.ggml.scores", t.scores);
  g.SetI32Array("tokenizer.ggml.token_type", types);
  g.SetU32("tokenizer.ggml.bos_token_id", 1);
  g.SetU32("tokenizer.ggml.eos_token_id", 2);
  g.SetU32("tokenizer.ggml.unknown_token_id", 0);
  g.SetBool("tokenizer.ggml.add_bos_token", true);
  g.SetBool("tokenizer.ggml.add_eos_token", false);
  g.SetBool("tokenizer.ggml.add_space_prefix", true);
  for (const SyntheticTensor& st : tensors_) {
    std::string data(st.data.begin(), st.data.end());
    const bool q = st.name.find(".attn_q.") != std::string::npos;
    const bool k = st.name.find(".attn_k.") != std::string::npos;
    if (a == "llama" && (q || k)) data = PermuteRows(st, q ? p.n_heads : p.n_kv_heads);
    std::vector<uint64_t> dims(st.shape.rbegin(), st.shape.rend());
    g.AddTensor(st.name, GgmlTypeId(st.dtype), std::move(dims), std::move(data));
  }
  return g;
}

absl::Status SyntheticModel::WriteGguf(const std::string& path) const {
  return WriteStringToFile(path, GgufBytes());
}

std::string SyntheticModel::ConfigJson() const {
  const SyntheticModelOptions& p = options_;
  const bool qwen = p.architecture == "qwen2";
  json j;
  j["architectures"] = {qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = p.architecture;
  j["hidden_size"] = p.d_model;
  j["intermediate_size"] = p.d_ff;
  j["num_hidden_layers"] = p.n_layers;
  j["num_attention_heads"] = p.n_heads;
  j["num_key_value_heads"] = p.n_kv_heads;
  j["head_dim"] = head_dim();
  j["vocab_size"] = p.vocab;
  j["max_position_embeddings"] = p.context_length;
  j["rms_norm_eps"] = ShortestDouble(p.rms_eps);
  j["rope_theta"] = ShortestDouble(p.rope_theta);
  j["rope_scaling"] = nullptr;
  j["tie_word_embeddings"] = p.tied;
  j["torch_dtype"] = TorchDTypeName(HfDType());
  j["hidden_act"] = "silu";
  j["bos_token_id"] = 1;
  j["eos_token_id"] = 2;
  if (qwen) j["use_sliding_window"] = false;
  return j.dump(2) + "\n";
}

std::string SyntheticModel::SafetensorsBytes() const {
  // Tensors in name order (as the header's keys sort), data back to back in that order.
  std::map<std::string, const SyntheticTensor*> by_name;
  for (const SyntheticTensor& t : tensors_) {
    if (!(options_.tied && t.name == "output.weight")) by_name[t.hf_name] = &t;
  }
  const DType dt = HfDType();
  json header;
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const auto& [name, t] : by_name) {
    size_t begin = data.size();
    for (float x : t->values) {
      if (dt == DType::kF32) {
        AppendPod(&data, x);
      } else {
        AppendPod(&data, dt == DType::kF16 ? F32ToF16(x) : F32ToBF16(x));
      }
    }
    header[name] = {
        {"dtype", HfDTypeName(dt)}, {"shape", t->shape}, {"data_offsets", {begin, data.size()}}};
  }
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');
  std::string out;
  AppendPod(&out, static_cast<uint64_t>(h.size()));
  return out + h + data;
}

std::string SyntheticModel::TokenizerJson() const {
  TokenizerSpec t = ExpectedTokenizer();
  json vocab = json::object();
  for (size_t i = 0; i < t.tokens.size(); ++i) vocab[t.tokens[i]] = i;
  // Each multi-character piece is (earlier piece) + (last letter), in id order.
  json merges = json::array();
  for (size_t i = 259; i < t.tokens.size(); ++i) {
    const std::string& p = t.tokens[i];
    if (p.size() > 1 && p != "\xe2\x96\x81")
      merges.push_back(p.substr(0, p.size() - 1) + " " + p.back());
  }
  json added = json::array();
  for (int i = 0; i < 3; ++i) {
    added.push_back({{"id", i},
                     {"content", t.tokens[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Prepend"}, {"prepend", "\xe2\x96\x81"}},
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xe2\x96\x81"}}}}};
  j["pre_tokenizer"] = nullptr;
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
        {{"SpecialToken", {{"id", "<s>"}, {"type_id", 1}}}},
        {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  j["decoder"] = {
      {"type", "Sequence"},
      {"decoders",
       {{{"type", "Replace"}, {"pattern", {{"String", "\xe2\x96\x81"}}}, {"content", " "}},
        {{"type", "ByteFallback"}},
        {{"type", "Fuse"}},
        {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", "<unk>"},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", true},
                {"byte_fallback", true},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merges}};
  return j.dump(2) + "\n";
}

std::string SyntheticModel::TokenizerConfigJson() const {
  json added = json::object();
  const char* names[] = {"<unk>", "<s>", "</s>"};
  for (int i = 0; i < 3; ++i) {
    added[std::to_string(i)] = {{"content", names[i]},  {"lstrip", false},
                                {"normalized", false},  {"rstrip", false},
                                {"single_word", false}, {"special", true}};
  }
  json j;
  j["add_bos_token"] = true;
  j["add_eos_token"] = false;
  j["added_tokens_decoder"] = added;
  j["bos_token"] = "<s>";
  j["eos_token"] = "</s>";
  j["unk_token"] = "<unk>";
  j["pad_token"] = nullptr;
  j["clean_up_tokenization_spaces"] = false;
  j["legacy"] = false;
  j["model_max_length"] = options_.context_length;
  j["tokenizer_class"] = "LlamaTokenizer";
  return j.dump(2) + "\n";
}

absl::Status SyntheticModel::WriteHfFolder(const std::string& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  namespace fs = std::filesystem;
  RSD_RETURN_IF_ERROR(WriteStringToFile((fs::path(dir) / "config.json").string(), ConfigJson()));
  RSD_RETURN_IF_ERROR(
      WriteStringToFile((fs::path(dir) / "model.safetensors").string(), SafetensorsBytes()));
  RSD_RETURN_IF_ERROR(
      WriteStringToFile((fs::path(dir) / "tokenizer.json").string(), TokenizerJson()));
  return WriteStringToFile((fs::path(dir) / "tokenizer_config.json").string(),
                           TokenizerConfigJson());
}

std::optional<DType> ParseDTypeName(const std::string& s) {
  for (DType t :
       {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_1}) {
    if (s == LowerDTypeName(t)) return t;
  }
  return std::nullopt;
}

std::string LowerDTypeName(DType t) {
  std::string s = DTypeName(t);
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

namespace {

SyntheticModelOptions Make(const std::string& name, const std::string& arch, int layers, int d,
                           int heads, int kv, int ff, int vocab, bool bias, bool tied, DType dtype,
                           float theta, uint64_t seed) {
  SyntheticModelOptions o;
  o.name = name;
  o.architecture = arch;
  o.n_layers = layers;
  o.d_model = d;
  o.n_heads = heads;
  o.n_kv_heads = kv;
  o.d_ff = ff;
  o.vocab = vocab;
  o.qkv_bias = bias;
  o.tied = tied;
  o.weight_dtype = dtype;
  o.rope_theta = theta;
  o.seed = seed;
  return o;
}

std::vector<SyntheticCatalogEntry> BuildCatalog() {
  const DType f32 = DType::kF32;
  std::vector<SyntheticCatalogEntry> c = {
      {"mha", "llama, MHA (4 heads of 16), untied, no bias, F32",
       Make("mha", "llama", 2, 64, 4, 4, 128, 300, false, false, f32, 10000.0f, 1)},
      {"gqa", "llama, GQA (4 heads of 32, 2 KV heads), tied embeddings, F32",
       Make("gqa", "llama", 3, 128, 4, 2, 256, 320, false, true, f32, 10000.0f, 2)},
      {"mqa", "llama, MQA (6 heads of 16, 1 KV head), untied, F32",
       Make("mqa", "llama", 2, 96, 6, 1, 192, 300, false, false, f32, 10000.0f, 3)},
      {"qwen2-bias", "qwen2 (NEOX pairing), GQA (4 heads of 16, 2 KV heads), QKV bias, untied, F32",
       Make("qwen2-bias", "qwen2", 2, 64, 4, 2, 128, 300, true, false, f32, 1000000.0f, 4)},
  };
  // Weight-format variants for the readers (and llama.cpp's view of them).
  for (DType t : {DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_1}) {
    SyntheticCatalogEntry e = c[0];
    e.name = "mha-" + LowerDTypeName(t);
    e.description = absl::StrCat("mha with ", DTypeName(t), " matrices");
    e.options.name = e.name;
    e.options.weight_dtype = t;
    c.push_back(e);
  }
  SyntheticCatalogEntry gq = c[1];
  gq.name = gq.options.name = "gqa-q4_1";
  gq.description = "gqa with Q4_1 matrices (a quantized tied output)";
  gq.options.weight_dtype = DType::kQ4_1;
  c.push_back(gq);
  SyntheticCatalogEntry qb = c[3];
  qb.name = qb.options.name = "qwen2-bias-q8_0";
  qb.description = "qwen2-bias with Q8_0 matrices";
  qb.options.weight_dtype = DType::kQ8_0;
  c.push_back(qb);
  return c;
}

}  // namespace

const std::vector<SyntheticCatalogEntry>& SyntheticModelCatalog() {
  static const std::vector<SyntheticCatalogEntry>* catalog =
      new std::vector<SyntheticCatalogEntry>(BuildCatalog());
  return *catalog;
}

const SyntheticCatalogEntry* FindSyntheticModel(const std::string& name) {
  for (const SyntheticCatalogEntry& e : SyntheticModelCatalog()) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

}  // namespace rsd::testing
