// GGUF metadata -> ModelConfig, TokenizerSpec and chat template. Keys follow llama.cpp's spelling
// (`<arch>.block_count`, `tokenizer.ggml.tokens`, ...); a wrongly typed key is INVALID_ARGUMENT,
// a valid feature we do not run (YaRN, per-layer head counts, a BERT vocab) is UNIMPLEMENTED.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"
#include "worker/model/gguf_file.h"

namespace rsd::gguf {

const char* ValueTypeName(ValueType t) {
  switch (t) {
    case ValueType::kU8:
      return "u8";
    case ValueType::kI8:
      return "i8";
    case ValueType::kU16:
      return "u16";
    case ValueType::kI16:
      return "i16";
    case ValueType::kU32:
      return "u32";
    case ValueType::kI32:
      return "i32";
    case ValueType::kF32:
      return "f32";
    case ValueType::kBool:
      return "bool";
    case ValueType::kString:
      return "string";
    case ValueType::kArray:
      return "array";
    case ValueType::kU64:
      return "u64";
    case ValueType::kI64:
      return "i64";
    case ValueType::kF64:
      return "f64";
  }
  return "?";
}

const char* GgmlTypeName(uint32_t t) {
  static const char* const kNames[] = {"F32",
                                       "F16",
                                       "Q4_0",
                                       "Q4_1",
                                       "Q4_2 (removed)",
                                       "Q4_3 (removed)",
                                       "Q5_0",
                                       "Q5_1",
                                       "Q8_0",
                                       "Q8_1",
                                       "Q2_K",
                                       "Q3_K",
                                       "Q4_K",
                                       "Q5_K",
                                       "Q6_K",
                                       "Q8_K",
                                       "IQ2_XXS",
                                       "IQ2_XS",
                                       "IQ3_XXS",
                                       "IQ1_S",
                                       "IQ4_NL",
                                       "IQ3_S",
                                       "IQ2_S",
                                       "IQ4_XS",
                                       "I8",
                                       "I16",
                                       "I32",
                                       "I64",
                                       "F64",
                                       "IQ1_M",
                                       "BF16",
                                       "Q4_0_4_4",
                                       "Q4_0_4_8",
                                       "Q4_0_8_8",
                                       "TQ1_0",
                                       "TQ2_0",
                                       "IQ4_NL_4_4",
                                       "IQ4_NL_4_8",
                                       "IQ4_NL_8_8",
                                       "MXFP4"};
  return t < sizeof(kNames) / sizeof(kNames[0]) ? kNames[t] : "unknown";
}

bool Value::IsInteger() const {
  switch (type) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kU16:
    case ValueType::kI16:
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kU64:
    case ValueType::kI64:
      return true;
    case ValueType::kF32:
    case ValueType::kBool:
    case ValueType::kString:
    case ValueType::kArray:
    case ValueType::kF64:
      return false;
  }
  return false;
}

bool Value::IsFloat() const { return type == ValueType::kF32 || type == ValueType::kF64; }

std::optional<int64_t> Value::AsInt() const {
  switch (type) {
    case ValueType::kI8:
      return static_cast<int8_t>(bits);
    case ValueType::kI16:
      return static_cast<int16_t>(bits);
    case ValueType::kI32:
      return static_cast<int32_t>(bits);
    case ValueType::kI64:
      return static_cast<int64_t>(bits);
    case ValueType::kU64:
      if (bits > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
      return static_cast<int64_t>(bits);
    case ValueType::kU8:
    case ValueType::kU16:
    case ValueType::kU32:
    case ValueType::kBool:
      return static_cast<int64_t>(bits);  // zero-extended
    case ValueType::kF32:
    case ValueType::kString:
    case ValueType::kArray:
    case ValueType::kF64:
      return std::nullopt;
  }
  return std::nullopt;
}

double Value::AsDouble() const {
  if (type == ValueType::kF32) {
    float f;
    uint32_t b = static_cast<uint32_t>(bits);
    std::memcpy(&f, &b, 4);
    return f;
  }
  if (type == ValueType::kF64) {
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
  }
  std::optional<int64_t> i = AsInt();
  return i ? static_cast<double>(*i) : static_cast<double>(bits);
}

Value Value::Element(uint64_t i) const {
  Value v;
  v.type = elem_type;
  size_t n = 0;
  switch (elem_type) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kBool:
      n = 1;
      break;
    case ValueType::kU16:
    case ValueType::kI16:
      n = 2;
      break;
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kF32:
      n = 4;
      break;
    case ValueType::kU64:
    case ValueType::kI64:
    case ValueType::kF64:
      n = 8;
      break;
    case ValueType::kString:
    case ValueType::kArray:
      return v;
  }
  std::memcpy(&v.bits, raw + i * n, n);
  return v;
}

namespace {

// Typed, checked access to the metadata; every error names the file and the key.
class Meta {
 public:
  Meta(const std::string& path, const File& f) : path_(path), f_(f) {}

  absl::Status Error(const std::string& key, const std::string& problem) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": metadata '", key, "' ", problem));
  }
  absl::Status Refuse(const std::string& key, const std::string& problem) const {
    return absl::UnimplementedError(absl::StrCat(path_, ": metadata '", key, "' ", problem));
  }
  const Value* Find(const std::string& key) const { return f_.Find(key); }

  // An integer in [0, INT32_MAX]; nullopt when absent.
  absl::StatusOr<std::optional<int>> Int(const std::string& key) const {
    const Value* v = Find(key);
    if (v == nullptr) return std::optional<int>();
    if (v->type == ValueType::kArray) return Refuse(key, "is a per-layer array; not supported");
    if (!v->IsInteger())
      return Error(key, absl::StrCat("is ", ValueTypeName(v->type), ", expected an integer"));
    std::optional<int64_t> i = v->AsInt();
    if (!i || *i < 0 || *i > std::numeric_limits<int32_t>::max()) {
      return Error(key, absl::StrCat("= ", i ? *i : -1, " is out of range"));
    }
    return std::optional<int>(static_cast<int>(*i));
  }
  absl::StatusOr<int> RequiredInt(const std::string& key) const {
    RSD_ASSIGN_OR_RETURN(std::optional<int> v, Int(key));
    if (!v)
      return absl::InvalidArgumentError(absl::StrCat(path_, ": metadata '", key, "' is missing"));
    return *v;
  }
  absl::StatusOr<std::optional<float>> Float(const std::string& key) const {
    const Value* v = Find(key);
    if (v == nullptr) return std::optional<float>();
    if (!v->IsFloat() && !v->IsInteger())
      return Error(key, absl::StrCat("is ", ValueTypeName(v->type), ", expected a number"));
    double d = v->AsDouble();
    if (!std::isfinite(d) || std::fabs(d) > 3e38)
      return Error(key, absl::StrCat("= ", d, " is not a finite float"));
    return std::optional<float>(static_cast<float>(d));
  }
  absl::StatusOr<std::optional<bool>> Bool(const std::string& key) const {
    const Value* v = Find(key);
    if (v == nullptr) return std::optional<bool>();
    if (v->type != ValueType::kBool)
      return Error(key, absl::StrCat("is ", ValueTypeName(v->type), ", expected a bool"));
    return std::optional<bool>(v->bits != 0);
  }
  absl::StatusOr<std::optional<std::string>> String(const std::string& key) const {
    const Value* v = Find(key);
    if (v == nullptr) return std::optional<std::string>();
    if (v->type != ValueType::kString)
      return Error(key, absl::StrCat("is ", ValueTypeName(v->type), ", expected a string"));
    return std::optional<std::string>(v->str);
  }
  // An array whose elements satisfy `ok`; nullptr when absent.
  template <typename Pred>
  absl::StatusOr<const Value*> Array(const std::string& key, const char* expected, Pred ok) const {
    const Value* v = Find(key);
    if (v == nullptr) return nullptr;
    if (v->type != ValueType::kArray || !ok(v->elem_type)) {
      return Error(key, absl::StrCat("is not an array of ", expected));
    }
    return v;
  }

 private:
  const std::string& path_;
  const File& f_;
};

bool HasTensor(const File& f, const std::string& name) {
  for (const TensorInfo& t : f.tensors) {
    if (t.name == name) return true;
  }
  return false;
}

absl::Status ReadRope(const Meta& m, const std::string& a, ModelConfig* c) {
  RSD_ASSIGN_OR_RETURN(std::optional<float> theta, m.Float(a + ".rope.freq_base"));
  c->rope_theta = theta.value_or(10000.0f);
  RSD_ASSIGN_OR_RETURN(std::optional<std::string> type, m.String(a + ".rope.scaling.type"));
  RSD_ASSIGN_OR_RETURN(std::optional<float> factor, m.Float(a + ".rope.scaling.factor"));
  RSD_ASSIGN_OR_RETURN(std::optional<float> linear, m.Float(a + ".rope.scale_linear"));
  RSD_ASSIGN_OR_RETURN(std::optional<int> orig, m.Int(a + ".rope.scaling.original_context_length"));
  if (!factor) factor = linear;
  std::string t = type.value_or(factor && *factor != 1.0f ? "linear" : "none");
  if (t == "none") return absl::OkStatus();
  if (t != "linear")
    return m.Refuse(a + ".rope.scaling.type", absl::StrCat("'", t, "' is not supported"));
  if (!factor || !(*factor > 0.0f))
    return m.Error(a + ".rope.scaling.factor", "must be positive for linear scaling");
  c->rope_scaling = RopeScaling::kLinear;
  c->rope_scale_factor = *factor;
  if (orig) c->rope_original_context = *orig;
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ReadConfig(const std::string& path, const File& f, const Meta& m) {
  ModelConfig c;
  RSD_ASSIGN_OR_RETURN(std::optional<std::string> arch, m.String("general.architecture"));
  if (!arch || arch->empty()) return m.Error("general.architecture", "is missing");
  c.architecture = *arch;
  // llama.cpp's converter permutes Q/K rows for these (adjacent pairing); qwen2 keeps NEOX order.
  // Other names are read as llama-family models with their own key prefix.
  c.source_pairing = *arch == "qwen2" ? RopePairing::kHalf : RopePairing::kAdjacent;
  RSD_ASSIGN_OR_RETURN(std::optional<std::string> name, m.String("general.name"));
  c.name = name.value_or(std::filesystem::path(path).stem().string());
  const std::string& a = *arch;
  RSD_ASSIGN_OR_RETURN(c.n_layers, m.RequiredInt(a + ".block_count"));
  RSD_ASSIGN_OR_RETURN(c.d_model, m.RequiredInt(a + ".embedding_length"));
  RSD_ASSIGN_OR_RETURN(c.n_heads, m.RequiredInt(a + ".attention.head_count"));
  RSD_ASSIGN_OR_RETURN(std::optional<int> n_kv, m.Int(a + ".attention.head_count_kv"));
  c.n_kv_heads = n_kv.value_or(c.n_heads);
  RSD_ASSIGN_OR_RETURN(c.d_ff, m.RequiredInt(a + ".feed_forward_length"));
  RSD_ASSIGN_OR_RETURN(c.context_length, m.RequiredInt(a + ".context_length"));
  RSD_ASSIGN_OR_RETURN(std::optional<int> key_len, m.Int(a + ".attention.key_length"));
  RSD_ASSIGN_OR_RETURN(std::optional<int> value_len, m.Int(a + ".attention.value_length"));
  if (key_len && value_len && *key_len != *value_len) {
    return m.Refuse(a + ".attention.value_length", "differs from the key length; not supported");
  }
  if (!key_len && c.n_heads > 0 && c.d_model % c.n_heads != 0) {
    return m.Error(
        a + ".embedding_length",
        absl::StrCat("= ", c.d_model, " is not a multiple of the head count ", c.n_heads));
  }
  c.head_dim = key_len ? *key_len : (c.n_heads > 0 ? c.d_model / c.n_heads : 0);
  RSD_ASSIGN_OR_RETURN(std::optional<int> rope_dim, m.Int(a + ".rope.dimension_count"));
  c.rope_dim = rope_dim.value_or(c.head_dim);
  RSD_ASSIGN_OR_RETURN(std::optional<float> eps, m.Float(a + ".attention.layer_norm_rms_epsilon"));
  if (!eps) return m.Error(a + ".attention.layer_norm_rms_epsilon", "is missing");
  c.rms_eps = *eps;
  RSD_RETURN_IF_ERROR(ReadRope(m, a, &c));
  RSD_ASSIGN_OR_RETURN(std::optional<int> vocab, m.Int(a + ".vocab_size"));
  c.vocab_size = vocab.value_or(0);
  c.tied_embeddings = !HasTensor(f, "output.weight");
  c.qkv_bias = HasTensor(f, "blk.0.attn_q.bias");
  return c;
}

// A special token id: -1 (or u32 0xFFFFFFFF) means none; otherwise it must name a token.
absl::Status ReadTokenId(const Meta& m, const std::string& key, size_t n_tokens, int32_t* id) {
  const Value* v = m.Find(key);
  if (v == nullptr) return absl::OkStatus();
  std::optional<int64_t> i = v->IsInteger() ? v->AsInt() : std::nullopt;
  if (!i) return m.Error(key, "is not an integer token id");
  if (*i == -1 || *i == 0xFFFFFFFFll) {
    *id = -1;
    return absl::OkStatus();
  }
  if (*i < 0 || static_cast<uint64_t>(*i) >= n_tokens) {
    return m.Error(
        key, absl::StrCat("= ", *i, " is not a token id (vocabulary has ", n_tokens, " tokens)"));
  }
  *id = static_cast<int32_t>(*i);
  return absl::OkStatus();
}

bool IsNumber(ValueType t) {
  return t != ValueType::kString && t != ValueType::kArray && t != ValueType::kBool;
}
bool IsIntegerType(ValueType t) {
  Value v;
  v.type = t;
  return v.IsInteger();
}

absl::Status ReadVocab(const Meta& m, TokenizerSpec* t) {
  RSD_ASSIGN_OR_RETURN(const Value* tokens,
                       m.Array("tokenizer.ggml.tokens", "strings",
                               [](ValueType e) { return e == ValueType::kString; }));
  if (tokens == nullptr || tokens->count == 0)
    return m.Error("tokenizer.ggml.tokens", "is missing or empty");
  t->tokens = tokens->strings;
  size_t n = t->tokens.size();
  RSD_ASSIGN_OR_RETURN(const Value* scores, m.Array("tokenizer.ggml.scores", "numbers", IsNumber));
  if (scores != nullptr) {
    if (scores->count != n)
      return m.Error("tokenizer.ggml.scores",
                     absl::StrCat("has ", scores->count, " entries for ", n, " tokens"));
    t->scores.resize(n);
    for (size_t i = 0; i < n; ++i) t->scores[i] = static_cast<float>(scores->Element(i).AsDouble());
  }
  t->types.assign(n, TokenType::kNormal);
  RSD_ASSIGN_OR_RETURN(const Value* types,
                       m.Array("tokenizer.ggml.token_type", "integers", IsIntegerType));
  if (types != nullptr) {
    if (types->count != n)
      return m.Error("tokenizer.ggml.token_type",
                     absl::StrCat("has ", types->count, " entries for ", n, " tokens"));
    for (size_t i = 0; i < n; ++i) {
      std::optional<int64_t> v = types->Element(i).AsInt();
      if (!v || *v < 0 || *v > 6)
        return m.Error("tokenizer.ggml.token_type",
                       absl::StrCat("has an unknown type at index ", i));
      t->types[i] = static_cast<TokenType>(*v);
    }
  }
  RSD_ASSIGN_OR_RETURN(const Value* merges,
                       m.Array("tokenizer.ggml.merges", "strings",
                               [](ValueType e) { return e == ValueType::kString; }));
  if (merges != nullptr) t->merges = merges->strings;
  if (t->model == "gpt2" && t->merges.empty())
    return m.Error("tokenizer.ggml.merges", "is missing (needed by a gpt2 tokenizer)");
  return absl::OkStatus();
}

int32_t FindEot(const TokenizerSpec& t) {
  for (const char* text : {"<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"}) {
    for (size_t i = 0; i < t.tokens.size(); ++i) {
      if (t.types[i] == TokenType::kControl && t.tokens[i] == text) return static_cast<int32_t>(i);
    }
  }
  return -1;
}

absl::StatusOr<TokenizerSpec> ReadTokenizer(const Meta& m) {
  TokenizerSpec t;
  RSD_ASSIGN_OR_RETURN(std::optional<std::string> model, m.String("tokenizer.ggml.model"));
  if (!model) return m.Error("tokenizer.ggml.model", "is missing (the file has no tokenizer)");
  if (*model != "llama" && *model != "gpt2")
    return m.Refuse("tokenizer.ggml.model",
                    absl::StrCat("'", *model, "' is not supported (llama and gpt2 are)"));
  t.model = *model;
  RSD_ASSIGN_OR_RETURN(std::optional<std::string> pre, m.String("tokenizer.ggml.pre"));
  t.pre = pre.value_or("default");
  RSD_RETURN_IF_ERROR(ReadVocab(m, &t));
  // llama.cpp's defaults, overridden by the file.
  bool spm = t.model == "llama";
  int32_t n = static_cast<int32_t>(t.tokens.size());
  t.bos_id = spm ? (n > 1 ? 1 : -1) : (n > 11 ? 11 : -1);
  t.eos_id = spm ? (n > 2 ? 2 : -1) : t.bos_id;
  t.unk_id = spm ? 0 : -1;
  t.add_bos = spm;
  t.add_space_prefix = spm;
  RSD_RETURN_IF_ERROR(ReadTokenId(m, "tokenizer.ggml.bos_token_id", n, &t.bos_id));
  RSD_RETURN_IF_ERROR(ReadTokenId(m, "tokenizer.ggml.eos_token_id", n, &t.eos_id));
  RSD_RETURN_IF_ERROR(ReadTokenId(m, "tokenizer.ggml.unknown_token_id", n, &t.unk_id));
  RSD_RETURN_IF_ERROR(ReadTokenId(m, "tokenizer.ggml.padding_token_id", n, &t.pad_id));
  t.eot_id = FindEot(t);
  RSD_RETURN_IF_ERROR(ReadTokenId(m, "tokenizer.ggml.eot_token_id", n, &t.eot_id));
  RSD_ASSIGN_OR_RETURN(std::optional<bool> add_bos, m.Bool("tokenizer.ggml.add_bos_token"));
  RSD_ASSIGN_OR_RETURN(std::optional<bool> add_eos, m.Bool("tokenizer.ggml.add_eos_token"));
  RSD_ASSIGN_OR_RETURN(std::optional<bool> space, m.Bool("tokenizer.ggml.add_space_prefix"));
  t.add_bos = add_bos.value_or(t.add_bos);
  t.add_eos = add_eos.value_or(false);
  t.add_space_prefix = space.value_or(t.add_space_prefix);
  return t;
}

}  // namespace

absl::StatusOr<ModelInfo> ReadModelInfo(const std::string& path, const File& file) {
  Meta m(path, file);
  ModelInfo info;
  RSD_ASSIGN_OR_RETURN(info.config, ReadConfig(path, file, m));
  RSD_ASSIGN_OR_RETURN(info.tokenizer, ReadTokenizer(m));
  if (info.config.vocab_size == 0)
    info.config.vocab_size = static_cast<int>(info.tokenizer.tokens.size());
  RSD_ASSIGN_OR_RETURN(std::optional<std::string> tmpl, m.String("tokenizer.chat_template"));
  info.chat_template = tmpl.value_or("");
  return info;
}

}  // namespace rsd::gguf
