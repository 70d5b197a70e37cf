// The GGUF reader on synthetic models written as real files (every catalog model, every metadata
// type, v2, custom alignment, head_dim override, tokenizer keys) and on the real models.
#include <cstdio>
#include <cstring>
#include <string>

#include "tests/worker/model/model_test_helpers.h"

namespace rsd {
namespace {

using testing::GgufBuilder;
using testing::GgufType;
using ::testing::HasSubstr;
using testing::SyntheticModel;
using testing::SyntheticModelOptions;

absl::StatusOr<std::unique_ptr<ModelFile>> LoadBytes(const std::string& name,
                                                     const std::string& bytes) {
  std::string dir = testing::MakeTempDir("rsd-gguf");
  return LoadModel(testing::WriteTemp(dir, name, bytes));
}

TEST(GgufReader, EveryCatalogModelRoundTrips) {
  for (const testing::SyntheticCatalogEntry& e : testing::SyntheticModelCatalog()) {
    SCOPED_TRACE(e.name);
    SyntheticModel model(e.options);
    auto loaded = LoadBytes(e.name + ".gguf", model.GgufBytes());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const ModelFile& m = **loaded;
    EXPECT_EQ(m.format, "gguf");
    testing::ExpectConfigEq(m.config, model.ExpectedConfig(), /*all=*/true);
    EXPECT_EQ(m.tensors.size(), model.tensors().size());
    for (const testing::SyntheticTensor& t : model.tensors()) {
      SCOPED_TRACE(t.name);
      const TensorView* v = m.Find(t.name);
      ASSERT_NE(v, nullptr);
      EXPECT_EQ(v->shape, t.shape);
      EXPECT_EQ(v->dtype, t.dtype);
      // Q/K rows are back in rotate-half order: the writer's bytes before its permutation.
      ASSERT_EQ(v->nbytes, t.data.size());
      EXPECT_EQ(std::memcmp(v->data, t.data.data(), v->nbytes), 0);
      EXPECT_TRUE(testing::SameBits(testing::Dequantize(*v), t.values));
      EXPECT_EQ(reinterpret_cast<uintptr_t>(v->data) % 16, 0u);
    }
    EXPECT_EQ(m.fingerprint.size(), 32u);
  }
}

TEST(GgufReader, TokenizerAndTemplate) {
  SyntheticModel model(testing::FindSyntheticModel("mha")->options);
  GgufBuilder g = model.MakeGguf();
  g.SetString("tokenizer.chat_template", "{{ messages }}");
  auto m = LoadBytes("t.gguf", g.Build().bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  const TokenizerSpec want = model.ExpectedTokenizer();
  const TokenizerSpec& got = (*m)->tokenizer;
  EXPECT_EQ(got.model, "llama");
  EXPECT_EQ(got.pre, "default");
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.scores, want.scores);
  EXPECT_EQ(got.types, want.types);
  EXPECT_TRUE(got.merges.empty());
  EXPECT_EQ(got.bos_id, 1);
  EXPECT_EQ(got.eos_id, 2);
  EXPECT_EQ(got.unk_id, 0);
  EXPECT_EQ(got.pad_id, -1);
  EXPECT_EQ(got.eot_id, -1);
  EXPECT_TRUE(got.add_bos);
  EXPECT_FALSE(got.add_eos);
  EXPECT_TRUE(got.add_space_prefix);
  EXPECT_EQ((*m)->chat_template, "{{ messages }}");
}

TEST(GgufReader, EndOfTurnFromControlTokenOrKey) {
  SyntheticModel model(testing::FindSyntheticModel("mha")->options);
  TokenizerSpec t = model.ExpectedTokenizer();
  std::vector<int32_t> types;
  for (TokenType ty : t.types) types.push_back(static_cast<int32_t>(ty));
  t.tokens[299] = "<|im_end|>";
  types[299] = static_cast<int32_t>(TokenType::kControl);
  GgufBuilder g = model.MakeGguf();
  g.SetStringArray("tokenizer.ggml.tokens", t.tokens);
  g.SetI32Array("tokenizer.ggml.token_type", types);
  auto m = LoadBytes("eot.gguf", g.Build().bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->tokenizer.eot_id, 299);
  g.SetU32("tokenizer.ggml.eot_token_id", 5);
  m = LoadBytes("eot2.gguf", g.Build().bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->tokenizer.eot_id, 5);
  // u32 0xFFFFFFFF means "none", as llama.cpp's converter writes it.
  g.SetU32("tokenizer.ggml.padding_token_id", 0xFFFFFFFFu);
  m = LoadBytes("eot3.gguf", g.Build().bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->tokenizer.pad_id, -1);
}

TEST(GgufReader, LlamaDefaultsWhenKeysAbsent) {
  SyntheticModel model(testing::FindSyntheticModel("mha")->options);
  GgufBuilder g = model.MakeGguf();
  for (const char* k :
       {"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
        "tokenizer.ggml.add_space_prefix", "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.pre",
        "llama.vocab_size", "llama.rope.freq_base", "llama.rope.dimension_count",
        "llama.attention.head_count_kv", "general.alignment", "general.name"}) {
    ASSERT_TRUE(g.Remove(k)) << k;
  }
  auto m = LoadBytes("defaults.gguf", g.Build().bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  const TokenizerSpec& t = (*m)->tokenizer;
  EXPECT_EQ(t.bos_id, 1);
  EXPECT_EQ(t.eos_id, 2);
  EXPECT_EQ(t.unk_id, 0);
  EXPECT_TRUE(t.add_bos);
  EXPECT_TRUE(t.add_space_prefix);
  EXPECT_EQ(t.pre, "default");
  EXPECT_EQ((*m)->config.vocab_size, 300);
  EXPECT_EQ((*m)->config.rope_theta, 10000.0f);
  EXPECT_EQ((*m)->config.n_kv_heads, 4);
  EXPECT_EQ((*m)->config.name, "defaults");
}

TEST(GgufReader, VersionTwoAlignmentAndEveryMetadataType) {
  SyntheticModel model(testing::FindSyntheticModel("gqa")->options);
  GgufBuilder g = model.MakeGguf();
  g.set_version(2);
  g.set_alignment(64);
  g.SetU32("general.alignment", 64);
  std::string p;
  auto raw = [&](const char* key, GgufType type, std::string payload) {
    g.SetRaw(key, static_cast<uint32_t>(type), std::move(payload));
  };
  raw("x.u8", GgufType::kU8, std::string(1, '\7'));
  raw("x.i8", GgufType::kI8, std::string(1, '\xff'));
  raw("x.u16", GgufType::kU16, std::string(2, '\1'));
  raw("x.i16", GgufType::kI16, std::string(2, '\xff'));
  raw("x.i64", GgufType::kI64, std::string(8, '\xff'));
  raw("x.f64", GgufType::kF64, std::string(8, '\0'));
  g.SetU64("x.u64", 1ull << 63);
  // An array of arrays: [[1, 2], []] of u8.
  testing::AppendPod(&p, static_cast<uint32_t>(GgufType::kArray));
  testing::AppendPod(&p, uint64_t{2});
  testing::AppendPod(&p, static_cast<uint32_t>(GgufType::kU8));
  testing::AppendPod(&p, uint64_t{2});
  p += "\1\2";
  testing::AppendPod(&p, static_cast<uint32_t>(GgufType::kU8));
  testing::AppendPod(&p, uint64_t{0});
  raw("x.nested", GgufType::kArray, p);
  // Integer keys may come in any integer type.
  p.clear();
  testing::AppendPod(&p, uint64_t{3});
  raw("llama.block_count", GgufType::kU64, p);
  g.SetI32("llama.context_length", 256);
  auto m = LoadBytes("v2.gguf", g.Build().bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->config.n_layers, 3);
  EXPECT_EQ((*m)->config.context_length, 256);
  EXPECT_TRUE((*m)->config.tied_embeddings);
}

TEST(GgufReader, HeadDimFromKeyLength) {
  SyntheticModelOptions o;
  o.name = "wide-heads";
  o.d_model = 64;
  o.n_heads = 4;
  o.n_kv_heads = 2;
  o.head_dim = 32;  // n_heads * head_dim = 128 != d_model
  SyntheticModel model(o);
  auto m = LoadBytes("wide.gguf", model.GgufBytes());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->config.head_dim, 32);
  EXPECT_EQ((*m)->Find("blk.0.attn_q.weight")->shape, (std::vector<int64_t>{128, 64}));
  EXPECT_EQ((*m)->Find("blk.0.attn_output.weight")->shape, (std::vector<int64_t>{64, 128}));
  EXPECT_EQ(std::memcmp((*m)->Find("blk.1.attn_k.weight")->data,
                        model.Find("blk.1.attn_k.weight")->data.data(),
                        model.Find("blk.1.attn_k.weight")->data.size()),
            0);
}

TEST(GgufReader, LinearRopeScaling) {
  SyntheticModel model(testing::FindSyntheticModel("mha")->options);
  GgufBuilder g = model.MakeGguf();
  g.SetString("llama.rope.scaling.type", "linear");
  g.SetF32("llama.rope.scaling.factor", 4.0f);
  auto m = LoadBytes("linear.gguf", g.Build().bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->config.rope_scaling, RopeScaling::kLinear);
  EXPECT_EQ((*m)->config.rope_scale_factor, 4.0f);
}

TEST(GgufReader, OptionalRopeFreqsTensor) {
  SyntheticModel model(testing::FindSyntheticModel("mha")->options);
  GgufBuilder g = model.MakeGguf();
  std::string data(8 * 4, '\0');
  g.AddTensor("rope_freqs.weight", 0, {8}, data);
  auto m = LoadBytes("freqs.gguf", g.Build().bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_NE((*m)->Find("rope_freqs.weight"), nullptr);
  EXPECT_EQ((*m)->Find("rope_freqs.weight")->shape, (std::vector<int64_t>{8}));
}

TEST(Fingerprint, StableAndSensitiveToOneByte) {
  SyntheticModel model(testing::FindSyntheticModel("mqa")->options);
  GgufBuilder g = model.MakeGguf();
  testing::GgufBuilder::Image img = g.Build();
  auto a = LoadBytes("a.gguf", img.bytes);
  auto b = LoadBytes("b.gguf", img.bytes);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->fingerprint, (*b)->fingerprint);
  std::string flipped = img.bytes;
  flipped[img.layout.tensors.at("blk.1.ffn_up.weight").data_begin + 77] ^= 0x01;
  auto c = LoadBytes("c.gguf", flipped);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NE((*a)->fingerprint, (*c)->fingerprint);
  // Metadata that does not change the computation does not change the fingerprint.
  g.SetString("general.name", "renamed");
  auto d = LoadBytes("d.gguf", g.Build().bytes);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ((*a)->fingerprint, (*d)->fingerprint);
  g.SetF32("llama.rope.freq_base", 20000.0f);
  auto e = LoadBytes("e.gguf", g.Build().bytes);
  ASSERT_TRUE(e.ok());
  EXPECT_NE((*a)->fingerprint, (*e)->fingerprint);
}

TEST(LoadModel, DispatchesOnWhatThePathIs) {
  std::string dir = testing::MakeTempDir("rsd-dispatch");
  EXPECT_THAT(LoadModel(dir + "/nope.gguf"),
              testing::StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir + "/nope.gguf")));
  std::string text = testing::WriteTemp(dir, "notes.txt", "hello, not a model");
  EXPECT_THAT(LoadModel(text), testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                                 HasSubstr(text + ": not a model")));
  std::string empty = testing::WriteTemp(dir, "empty.gguf", "");
  EXPECT_THAT(LoadModel(empty), testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                                  HasSubstr(empty + ": not a model")));
  SyntheticModel model(testing::FindSyntheticModel("mha")->options);
  testing::WrittenModel w = testing::WriteBoth(model, dir);
  auto g = LoadModel(w.gguf);
  auto h = LoadModel(w.hf);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ((*g)->format, "gguf");
  EXPECT_EQ((*h)->format, "safetensors");
}

TEST(RealModels, SmolLM2) {
  const std::string path = testing::SmolLM2Path();
  if (path.empty())
    GTEST_SKIP() << "SmolLM2-135M-Instruct.Q4_1.gguf not found (tools/fetch-model.sh)";
  auto m = LoadModel(path);
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = (*m)->config;
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.d_model, 576);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.d_ff, 1536);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.context_length, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0f);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.source_pairing, RopePairing::kAdjacent);
  EXPECT_EQ((*m)->Find("token_embd.weight")->dtype, DType::kQ8_0);
  EXPECT_EQ((*m)->Find("blk.0.attn_q.weight")->dtype, DType::kQ4_1);
  EXPECT_EQ((*m)->Find("blk.29.ffn_down.weight")->dtype, DType::kQ4_1);
  EXPECT_EQ((*m)->Find("output.weight"), nullptr);
  const TokenizerSpec& t = (*m)->tokenizer;
  EXPECT_EQ(t.model, "gpt2");
  EXPECT_EQ(t.pre, "smollm");
  EXPECT_EQ(t.tokens.size(), 49152u);
  EXPECT_EQ(t.merges.size(), 48900u);
  EXPECT_EQ(t.eot_id, 2);  // <|im_end|>
  EXPECT_FALSE(t.add_bos);
  EXPECT_THAT((*m)->chat_template, HasSubstr("<|im_start|>"));
  std::printf("SmolLM2 fingerprint %s\n", (*m)->fingerprint.c_str());
}

TEST(RealModels, Stories260K) {
  const std::string path = testing::Stories260KPath();
  if (path.empty()) GTEST_SKIP() << "../shared/models/stories260K.gguf not found";
  auto m = LoadModel(path);
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = (*m)->config;
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.d_model, 64);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.d_ff, 172);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_EQ((*m)->tokenizer.model, "llama");
  EXPECT_EQ((*m)->tokenizer.pad_id, -1);
  EXPECT_TRUE((*m)->tokenizer.add_bos);
}

}  // namespace
}  // namespace rsd
