// Malformed model files: every case gets its exact status code and a message naming the file and
// the problem; then fuzz loops that truncate and flip bytes and only demand a clean status.
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>

#include "nlohmann/json.hpp"
#include "tests/worker/model/model_test_helpers.h"

namespace rsd {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using json = nlohmann::json;
using testing::GgufBuilder;
using testing::GgufLayout;
using testing::StatusIs;
using testing::SyntheticModel;
constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
constexpr auto kUnimplemented = absl::StatusCode::kUnimplemented;

template <typename T>
void Patch(std::string* bytes, size_t offset, T v) {
  std::memcpy(bytes->data() + offset, &v, sizeof(T));
}

class MalformedGguf : public ::testing::Test {
 protected:
  MalformedGguf() : model_(testing::FindSyntheticModel("mha")->options) {
    dir_ = testing::MakeTempDir("rsd-malformed");
    builder_ = model_.MakeGguf();
    GgufBuilder::Image img = builder_.Build();
    bytes_ = img.bytes;
    layout_ = img.layout;
  }
  // Loads `bytes` from a fresh file; the status must name that file.
  absl::Status Load(const std::string& bytes) {
    path_ = testing::WriteTemp(dir_, "m" + std::to_string(n_++) + ".gguf", bytes);
    return LoadGguf(path_).status();
  }
  absl::Status Load(const GgufBuilder& g) { return Load(g.Build().bytes); }
  // The file's path, then the problem.
  auto Names(const std::string& problem) {
    return AllOf(StartsWith(path_ + ": "), HasSubstr(problem));
  }
  void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& problem) {
    EXPECT_THAT(s, StatusIs(code, Names(problem)));
  }

  SyntheticModel model_;
  std::string dir_, path_, bytes_;
  GgufBuilder builder_;
  GgufLayout layout_;
  int n_ = 0;
};

TEST_F(MalformedGguf, Header) {
  std::string b = bytes_;
  b[0] = 'X';
  ExpectError(Load(b), kInvalid, "bad magic");
  EXPECT_THAT(LoadModel(path_), StatusIs(kInvalid, HasSubstr(path_ + ": not a model")));
  b = bytes_;
  Patch<uint32_t>(&b, GgufLayout::kVersionOffset, 1);
  ExpectError(Load(b), kUnimplemented, "GGUF version 1 is not supported");
  Patch<uint32_t>(&b, GgufLayout::kVersionOffset, 0x03000000);
  ExpectError(Load(b), kInvalid, "bad GGUF version 50331648");
  ExpectError(Load(bytes_.substr(0, 20)), kInvalid, "truncated: metadata count at offset 16");
  ExpectError(Load(bytes_.substr(0, 2)), kInvalid, "truncated: magic");
  b = bytes_;
  Patch<uint64_t>(&b, GgufLayout::kTensorCountOffset, uint64_t{1} << 60);
  ExpectError(Load(b), kInvalid, "more than a file of");
  b = bytes_;
  Patch<uint64_t>(&b, GgufLayout::kKvCountOffset, uint64_t{1} << 40);
  ExpectError(Load(b), kInvalid, "more than a file of");
}

TEST_F(MalformedGguf, Metadata) {
  const auto& name = layout_.kvs.at("general.name");
  const auto& last = layout_.kvs.at("tokenizer.ggml.add_space_prefix");
  ExpectError(Load(bytes_.substr(0, last.type_offset + 2)), kInvalid,
              "truncated: metadata 'tokenizer.ggml.add_space_prefix' type");
  ExpectError(Load(bytes_.substr(0, layout_.kvs.at("tokenizer.ggml.scores").value_begin + 100)),
              kInvalid, "metadata 'tokenizer.ggml.scores' claims 300 f32 elements");
  std::string b = bytes_;
  Patch<uint64_t>(&b, name.value_begin, uint64_t{1} << 50);
  ExpectError(Load(b), kInvalid, "metadata 'general.name' has length 1125899906842624");
  b = bytes_;
  Patch<uint64_t>(&b, layout_.kvs.at("tokenizer.ggml.tokens").value_begin + 4, uint64_t{1} << 40);
  ExpectError(Load(b), kInvalid, "claims 1099511627776 string elements");
  b = bytes_;
  Patch<uint32_t>(&b, name.type_offset, 99);
  ExpectError(Load(b), kInvalid, "metadata 'general.name' has unknown value type 99");
  b = bytes_;
  Patch<uint32_t>(&b, layout_.kvs.at("tokenizer.ggml.scores").value_begin, 42);
  ExpectError(Load(b), kInvalid, "unknown array element type 42");
  // A duplicate key: write "general.namf", then turn it into "general.name".
  GgufBuilder g = builder_;
  g.SetString("general.namf", "x");
  GgufBuilder::Image img = g.Build();
  img.bytes[img.layout.kvs.at("general.namf").key_begin + 8 + 11] = 'e';
  ExpectError(Load(img.bytes), kInvalid, "duplicate metadata key 'general.name'");
  g = builder_;
  g.SetU32("general.alignment", 48);
  ExpectError(Load(g), kInvalid, "general.alignment must be a power of two");
}

TEST_F(MalformedGguf, TensorInfosAndData) {
  const auto& out = layout_.tensors.at("output.weight");
  ExpectError(Load(bytes_.substr(0, out.type_offset + 2)), kInvalid,
              "truncated: tensor 'output.weight' type");
  ExpectError(Load(bytes_.substr(0, bytes_.size() - 100)), kInvalid,
              "tensor 'output.weight' data [");
  EXPECT_THAT(Load(bytes_.substr(0, bytes_.size() - 100)).message(),
              HasSubstr("runs past the end"));
  const auto& up = layout_.tensors.at("blk.0.ffn_up.weight");
  std::string b = bytes_;
  Patch<uint32_t>(&b, up.type_offset, 12);
  ExpectError(Load(b), kUnimplemented, "tensor 'blk.0.ffn_up.weight' has tensor type 12 (Q4_K)");
  Patch<uint32_t>(&b, up.type_offset, 200);
  ExpectError(Load(b), kUnimplemented, "tensor type 200 (unknown)");
  b = bytes_;
  Patch<uint32_t>(&b, up.dims_offset, 5);
  ExpectError(Load(b), kInvalid, "tensor 'blk.0.ffn_up.weight' has 5 dimensions");
  b = bytes_;
  Patch<uint64_t>(&b, up.dims_offset + 4, 0);
  ExpectError(Load(b), kInvalid, "tensor 'blk.0.ffn_up.weight' has an absurd dimension 0");
  b = bytes_;
  uint64_t off;
  std::memcpy(&off, b.data() + up.offset_offset, 8);
  Patch<uint64_t>(&b, up.offset_offset, off + 4);
  ExpectError(Load(b), kInvalid,
              "data offset " + std::to_string(off + 4) + " is not a multiple of the alignment 32");
  Patch<uint64_t>(&b, up.offset_offset, uint64_t{1} << 40);
  ExpectError(Load(b), kInvalid, "runs past the end of the file");
  uint64_t gate_off;
  std::memcpy(&gate_off, b.data() + layout_.tensors.at("blk.0.ffn_gate.weight").offset_offset, 8);
  Patch<uint64_t>(&b, up.offset_offset, gate_off);
  ExpectError(Load(b), kInvalid, "overlap");
  GgufBuilder g = builder_;
  g.AddTensor("blk.0.attn_norm.weighu", 0, {64}, std::string(256, '\0'));
  GgufBuilder::Image img = g.Build();
  img.bytes[img.layout.tensors.at("blk.0.attn_norm.weighu").info_begin + 8 + 21] = 't';
  ExpectError(Load(img.bytes), kInvalid, "duplicate tensor 'blk.0.attn_norm.weight'");
  g = builder_;
  g.FindTensor("blk.0.attn_q.weight")->ggml_type = 8;  // Q8_0 rows of 48 values: impossible
  g.FindTensor("blk.0.attn_q.weight")->dims = {48, 64};
  ExpectError(Load(g), kInvalid, "inner dimension is not a multiple of 32");
}

TEST_F(MalformedGguf, ConfigMetadata) {
  auto with = [&](auto edit) {
    GgufBuilder g = builder_;
    edit(g);
    return Load(g);
  };
  ExpectError(with([](GgufBuilder& g) { g.SetString("llama.block_count", "2"); }), kInvalid,
              "metadata 'llama.block_count' is string, expected an integer");
  ExpectError(with([](GgufBuilder& g) { g.Remove("llama.embedding_length"); }), kInvalid,
              "metadata 'llama.embedding_length' is missing");
  ExpectError(with([](GgufBuilder& g) { g.Remove("general.architecture"); }), kInvalid,
              "metadata 'general.architecture' is missing");
  ExpectError(with([](GgufBuilder& g) { g.SetU32("llama.block_count", 5000); }), kInvalid,
              "n_layers = 5000 is out of range");
  ExpectError(with([](GgufBuilder& g) { g.SetU64("llama.block_count", uint64_t{1} << 40); }),
              kInvalid, "metadata 'llama.block_count' = 1099511627776 is out of range");
  ExpectError(with([](GgufBuilder& g) { g.SetU32("llama.embedding_length", 100000); }), kInvalid,
              "d_model = 100000 is out of range");
  ExpectError(with([](GgufBuilder& g) { g.SetU32("llama.vocab_size", 20000000); }), kInvalid,
              "vocab_size = 20000000 is out of range");
  ExpectError(with([](GgufBuilder& g) { g.SetU32("llama.context_length", 20000000); }), kInvalid,
              "context_length = 20000000 is out of range");
  ExpectError(with([](GgufBuilder& g) { g.SetU32("llama.attention.head_count_kv", 3); }), kInvalid,
              "n_heads 4 is not a multiple of n_kv_heads 3");
  ExpectError(with([](GgufBuilder& g) { g.SetU32("llama.attention.key_length", 15); }), kInvalid,
              "head_dim 15 is odd");
  ExpectError(with([](GgufBuilder& g) { g.SetU32("llama.rope.dimension_count", 8); }),
              kUnimplemented, "partial RoPE (8 of 16");
  ExpectError(with([](GgufBuilder& g) { g.SetString("llama.rope.scaling.type", "yarn"); }),
              kUnimplemented, "'yarn' is not supported");
  ExpectError(with([](GgufBuilder& g) { g.SetF32("llama.attention.layer_norm_rms_epsilon", -1); }),
              kInvalid, "rms_eps = -1 is out of range");
  ExpectError(with([](GgufBuilder& g) { g.SetU32("llama.vocab_size", 301); }), kInvalid,
              "vocab_size 301 does not match the 300 rows of token_embd.weight");
}

TEST_F(MalformedGguf, TokenizerMetadata) {
  TokenizerSpec t = model_.ExpectedTokenizer();
  auto with = [&](auto edit) {
    GgufBuilder g = builder_;
    edit(g);
    return Load(g);
  };
  std::vector<std::string> fewer(t.tokens.begin(), t.tokens.end() - 1);
  std::vector<float> fewer_scores(t.scores.begin(), t.scores.end() - 1);
  ExpectError(with([&](GgufBuilder& g) { g.SetF32Array("tokenizer.ggml.scores", fewer_scores); }),
              kInvalid, "metadata 'tokenizer.ggml.scores' has 299 entries for 300 tokens");
  ExpectError(with([&](GgufBuilder& g) {
                g.SetStringArray("tokenizer.ggml.tokens", fewer);
                g.SetF32Array("tokenizer.ggml.scores", fewer_scores);
                g.Remove("tokenizer.ggml.token_type");
              }),
              kInvalid, "the tokenizer has 299 tokens but the model's vocabulary has 300");
  ExpectError(with([](GgufBuilder& g) { g.Remove("tokenizer.ggml.model"); }), kInvalid,
              "metadata 'tokenizer.ggml.model' is missing");
  ExpectError(with([](GgufBuilder& g) { g.SetString("tokenizer.ggml.model", "bert"); }),
              kUnimplemented, "'bert' is not supported");
  ExpectError(with([](GgufBuilder& g) { g.Remove("tokenizer.ggml.tokens"); }), kInvalid,
              "metadata 'tokenizer.ggml.tokens' is missing or empty");
  ExpectError(with([](GgufBuilder& g) { g.SetU32("tokenizer.ggml.bos_token_id", 300); }), kInvalid,
              "'tokenizer.ggml.bos_token_id' = 300 is not a token id");
  ExpectError(with([](GgufBuilder& g) {
                g.SetI32Array("tokenizer.ggml.token_type", std::vector<int32_t>(300, 9));
              }),
              kInvalid, "'tokenizer.ggml.token_type' has an unknown type at index 0");
  ExpectError(with([](GgufBuilder& g) { g.SetString("tokenizer.ggml.model", "gpt2"); }), kInvalid,
              "'tokenizer.ggml.merges' is missing");
}

TEST_F(MalformedGguf, Tensors) {
  auto with = [&](auto edit) {
    GgufBuilder g = builder_;
    edit(g);
    return Load(g);
  };
  ExpectError(with([](GgufBuilder& g) { g.RemoveTensor("blk.1.ffn_down.weight"); }), kInvalid,
              "required tensor 'blk.1.ffn_down.weight' is missing");
  ExpectError(with([](GgufBuilder& g) {
                GgufBuilder::Tensor* t = g.FindTensor("blk.0.attn_q.weight");
                t->dims = {64, 32};
                t->data.resize(64 * 32 * 4);
              }),
              kInvalid, "tensor 'blk.0.attn_q.weight' has shape [32, 64], expected [64, 64]");
  ExpectError(with([](GgufBuilder& g) {
                g.AddTensor("blk.7.attn_norm.weight", 0, {64}, std::string(256, '\0'));
              }),
              kInvalid,
              "tensor 'blk.7.attn_norm.weight' is for layer 7 but the model has 2 layers");
  ExpectError(with([](GgufBuilder& g) {
                g.AddTensor("blk.0.attn_q_norm.weight", 0, {16}, std::string(64, '\0'));
              }),
              kUnimplemented, "unexpected tensor 'blk.0.attn_q_norm.weight'");
  ExpectError(with([](GgufBuilder& g) {
                GgufBuilder::Tensor* t = g.FindTensor("blk.0.attn_norm.weight");
                t->ggml_type = 8;
                t->data.assign(2 * 34, '\0');
              }),
              kUnimplemented, "1-D tensor 'blk.0.attn_norm.weight' has block type Q8_0");
  // Without output.weight the model reads as tied; without token_embd nothing works.
  ExpectError(with([](GgufBuilder& g) { g.RemoveTensor("token_embd.weight"); }), kInvalid,
              "required tensor 'token_embd.weight' is missing");
}

// ---- Hugging Face folders ----------------------------------------------------------------------

class MalformedHf : public ::testing::Test {
 protected:
  MalformedHf() : model_(testing::FindSyntheticModel("mha")->options) {}
  // A fresh copy of the folder, edited by `edit(dir)`, then loaded.
  template <typename Edit>
  absl::Status Load(Edit edit) {
    dir_ = testing::MakeTempDir("rsd-malformed-hf") + "/m";
    EXPECT_TRUE(model_.WriteHfFolder(dir_).ok());
    edit(dir_);
    return LoadModel(dir_).status();
  }
  void EditConfig(const std::string& dir, const std::function<void(json&)>& f) {
    json j = json::parse(model_.ConfigJson());
    f(j);
    testing::WriteTemp(dir, "config.json", j.dump());
  }
  std::string safetensors() const { return model_.SafetensorsBytes(); }

  SyntheticModel model_;
  std::string dir_;
};

TEST_F(MalformedHf, ConfigJson) {
  auto s = Load([](const std::string& d) { std::filesystem::remove(d + "/config.json"); });
  EXPECT_THAT(s, StatusIs(kInvalid, HasSubstr(dir_ + "/config.json: missing")));
  s = Load(
      [](const std::string& d) { testing::WriteTemp(d, "config.json", "{\"hidden_size\": 6"); });
  EXPECT_THAT(s, StatusIs(kInvalid, HasSubstr(dir_ + "/config.json: bad JSON")));
  s = Load([](const std::string& d) { testing::WriteTemp(d, "config.json", "[1, 2]"); });
  EXPECT_THAT(s, StatusIs(kInvalid, HasSubstr(dir_ + "/config.json: not a JSON object")));
  s = Load([&](const std::string& d) { EditConfig(d, [](json& j) { j["hidden_size"] = "64"; }); });
  EXPECT_THAT(s,
              StatusIs(kInvalid, HasSubstr("config.json: field 'hidden_size' is not an integer")));
  s = Load(
      [&](const std::string& d) { EditConfig(d, [](json& j) { j["num_hidden_layers"] = -1; }); });
  EXPECT_THAT(s, StatusIs(kInvalid, HasSubstr("field 'num_hidden_layers' = -1 is negative")));
  s = Load(
      [&](const std::string& d) { EditConfig(d, [](json& j) { j.erase("intermediate_size"); }); });
  EXPECT_THAT(s,
              StatusIs(kInvalid, HasSubstr("config.json: field 'intermediate_size' is missing")));
  s = Load([&](const std::string& d) {
    EditConfig(d, [](json& j) { j["architectures"] = {"GPT2LMHeadModel"}; });
  });
  EXPECT_THAT(
      s, StatusIs(kUnimplemented, HasSubstr("architecture 'GPT2LMHeadModel' is not supported")));
  s = Load(
      [&](const std::string& d) { EditConfig(d, [](json& j) { j["num_hidden_layers"] = 5000; }); });
  EXPECT_THAT(s, StatusIs(kInvalid, HasSubstr(dir_ + ": n_layers = 5000 is out of range")));
  s = Load([&](const std::string& d) { EditConfig(d, [](json& j) { j["vocab_size"] = 301; }); });
  EXPECT_THAT(s, StatusIs(kInvalid, HasSubstr("vocab_size 301 does not match the 300 rows")));
  s = Load([&](const std::string& d) {
    EditConfig(d, [](json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; });
  });
  EXPECT_THAT(s, StatusIs(kUnimplemented, HasSubstr("rope_scaling type 'yarn' is not supported")));
  s = Load(
      [&](const std::string& d) { EditConfig(d, [](json& j) { j["num_key_value_heads"] = 2; }); });
  EXPECT_THAT(s, StatusIs(kInvalid, HasSubstr("tensor 'blk.0.attn_k.weight' has shape [64, 64], "
                                              "expected [32, 64]")));
}

TEST_F(MalformedHf, SafetensorsFiles) {
  auto s = Load([](const std::string& d) { std::filesystem::remove(d + "/model.safetensors"); });
  EXPECT_THAT(s, StatusIs(kInvalid, HasSubstr(dir_ + ": no *.safetensors files")));
  const std::string st = safetensors();
  uint64_t n;
  std::memcpy(&n, st.data(), 8);
  auto with = [&](std::string bytes) {
    return Load([&](const std::string& d) { testing::WriteTemp(d, "model.safetensors", bytes); });
  };
  const std::string file = "/model.safetensors: ";
  EXPECT_THAT(with(st.substr(0, 4)), StatusIs(kInvalid, HasSubstr(file + "truncated")));
  std::string b = st;
  Patch<uint64_t>(&b, 0, uint64_t{1} << 40);
  EXPECT_THAT(with(b),
              StatusIs(kInvalid, HasSubstr(file + "safetensors header length 1099511627776")));
  b = st;
  b[8] = 'x';
  EXPECT_THAT(with(b), StatusIs(kInvalid, HasSubstr(file + "bad safetensors JSON header")));
  EXPECT_THAT(with(st.substr(0, st.size() - 1000)),
              StatusIs(kInvalid, HasSubstr("runs past the end of the file")));
  json h = json::parse(st.substr(8, n));
  auto with_header = [&](const json& header, const std::string& extra = "") {
    std::string hs = header.dump();
    std::string out;
    testing::AppendPod(&out, static_cast<uint64_t>(hs.size()));
    return with(out + hs + st.substr(8 + n) + extra);
  };
  json e = h;
  e["model.norm.weight"]["dtype"] = "I64";
  EXPECT_THAT(with_header(e),
              StatusIs(kUnimplemented, HasSubstr("tensor 'model.norm.weight' has dtype I64")));
  e["model.norm.weight"]["dtype"] = "Q9";
  EXPECT_THAT(with_header(e), StatusIs(kInvalid, HasSubstr("unknown dtype 'Q9'")));
  e = h;
  e["model.norm.weight"]["shape"] = {63};
  EXPECT_THAT(
      with_header(e),
      StatusIs(kInvalid, HasSubstr("has 256 bytes of data but its dtype and shape need 252")));
  e = h;
  e["model.norm.weight"]["data_offsets"] = h["lm_head.weight"]["data_offsets"];
  e["model.norm.weight"]["shape"] = h["lm_head.weight"]["shape"];
  EXPECT_THAT(with_header(e), StatusIs(kInvalid, HasSubstr("overlap")));
  e = h;
  e["model.norm.weight"]["shape"] = {-64};
  EXPECT_THAT(with_header(e), StatusIs(kInvalid, HasSubstr("absurd shape")));
  e = h;
  e.erase("model.layers.1.mlp.up_proj.weight");
  EXPECT_THAT(with_header(e),
              StatusIs(kInvalid, HasSubstr("required tensor 'blk.1.ffn_up.weight' is missing")));
  e = h;
  const uint64_t end = st.size() - 8 - n;
  e["model.layers.0.self_attn.q_norm.weight"] = {
      {"dtype", "F32"}, {"shape", {16}}, {"data_offsets", {end, end + 64}}};
  EXPECT_THAT(with_header(e, std::string(64, '\0')),
              StatusIs(kUnimplemented,
                       HasSubstr("unexpected tensor 'model.layers.0.self_attn.q_norm.weight'")));
}

TEST_F(MalformedHf, TokenizerAndShards) {
  auto s = Load([](const std::string& d) { std::filesystem::remove(d + "/tokenizer.json"); });
  EXPECT_THAT(s, StatusIs(kInvalid, HasSubstr(dir_ + "/tokenizer.json: missing")));
  s = Load([](const std::string& d) { testing::WriteTemp(d, "tokenizer.json", "{oops"); });
  EXPECT_THAT(s, StatusIs(kInvalid, HasSubstr(dir_ + "/tokenizer.json")));
  s = Load([](const std::string& d) {
    testing::WriteTemp(
        d, "model.safetensors.index.json",
        R"({"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}})");
  });
  EXPECT_THAT(
      s, StatusIs(kInvalid,
                  HasSubstr("model-00002-of-00002.safetensors: safetensors shard is missing")));
  s = Load([](const std::string& d) {
    testing::WriteTemp(d, "model.safetensors.index.json",
                       R"({"weight_map": {"x": "../../etc/passwd"}})");
  });
  EXPECT_THAT(s, StatusIs(kInvalid, HasSubstr("bad shard file name for tensor 'x'")));
  s = Load(
      [](const std::string& d) { testing::WriteTemp(d, "model.safetensors.index.json", "nope"); });
  EXPECT_THAT(s, StatusIs(kInvalid, HasSubstr("model.safetensors.index.json: bad JSON")));
}

// ---- Fuzz: truncations and byte flips never crash and always give a clean status -------------

// RSD_FUZZ_SCALE=N runs N times the iterations (for a long local run under the sanitizers).
int FuzzIterations(int base) {
  const char* s = std::getenv("RSD_FUZZ_SCALE");
  return s != nullptr && std::atoi(s) > 0 ? base * std::atoi(s) : base;
}

void ExpectClean(const absl::Status& s, const std::string& path, const std::string& what) {
  if (s.ok()) return;
  EXPECT_TRUE(s.code() == kInvalid || s.code() == kUnimplemented) << what << ": " << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(path)) << what;
}

// Both Q/K pairings (llama rows are un-permuted after loading, qwen2 rows are not).
class FuzzGguf : public ::testing::TestWithParam<const char*> {};

TEST_P(FuzzGguf, TruncationsAndFlips) {
  SyntheticModel model(testing::FindSyntheticModel(GetParam())->options);
  GgufBuilder::Image img = model.MakeGguf().Build();
  const std::string& bytes = img.bytes;
  const std::string path = testing::MakeTempDir("rsd-fuzz") + "/f.gguf";
  int loads = 0;
  auto load = [&](const std::string& b, const std::string& what) {
    ASSERT_TRUE(WriteStringToFile(path, b).ok());
    ExpectClean(LoadModel(path).status(), path, what);
    ++loads;
  };
  const size_t meta_end = img.layout.data_begin;
  for (size_t cut = 0; cut < meta_end + 64; cut += cut < 4096 ? 5 : 23) {
    load(bytes.substr(0, cut), "truncated at " + std::to_string(cut));
  }
  testing::SplitMix64 rng(7);
  for (int i = 0; i < FuzzIterations(1000); ++i) {
    std::string b = bytes;
    const uint64_t r = rng.Next();
    // Mostly in the header, metadata and tensor infos, where the structure lives.
    size_t pos = (r & 3) != 0 ? (r >> 8) % meta_end : (r >> 8) % b.size();
    b[pos] ^= static_cast<char>(1u << ((r >> 4) % 8));
    if ((r & 0x30) == 0) b[(pos + 1) % b.size()] = static_cast<char>(0xff);
    load(b, "flip at " + std::to_string(pos));
  }
  std::printf("fuzzed %d variants of %s\n", loads, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Models, FuzzGguf, ::testing::Values("mha-q4_0", "qwen2-bias-q8_0"));

TEST(FuzzModelFiles, HfFlips) {
  SyntheticModel model(testing::FindSyntheticModel("mha")->options);
  const std::string dir = testing::MakeTempDir("rsd-fuzz-hf") + "/m";
  ASSERT_TRUE(model.WriteHfFolder(dir).ok());
  const std::string st = model.SafetensorsBytes(), cfg = model.ConfigJson();
  uint64_t n;
  std::memcpy(&n, st.data(), 8);
  testing::SplitMix64 rng(11);
  for (int i = 0; i < FuzzIterations(800); ++i) {
    const uint64_t r = rng.Next();
    std::string s = st, c = cfg;
    if (r & 1) {
      s[(r >> 8) % (8 + n)] ^= static_cast<char>(1u << ((r >> 4) % 8));
    } else {
      c[(r >> 8) % c.size()] ^= static_cast<char>(1u << ((r >> 4) % 8));
    }
    if ((r & 6) == 0) s = s.substr(0, (r >> 20) % (8 + n + 64));
    ASSERT_TRUE(WriteStringToFile(dir + "/model.safetensors", s).ok());
    ASSERT_TRUE(WriteStringToFile(dir + "/config.json", c).ok());
    ExpectClean(LoadModel(dir).status(), dir, "variant " + std::to_string(i));
  }
}

}  // namespace
}  // namespace rsd
