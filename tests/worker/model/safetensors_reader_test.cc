// The Hugging Face folder reader, and the equivalence of the GGUF and HF copies of one model.
#include <cstring>
#include <filesystem>
#include <map>
#include <string>

#include "nlohmann/json.hpp"
#include "tests/worker/model/model_test_helpers.h"

namespace rsd {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;
using testing::SyntheticModel;

namespace fs = std::filesystem;

// A safetensors file of F32 tensors (HF names), with the header padded by `pad` spaces.
std::string F32Safetensors(const std::vector<const testing::SyntheticTensor*>& ts, int pad = 0) {
  json header = json::object();
  std::string data;
  for (const testing::SyntheticTensor* t : ts) {
    size_t begin = data.size();
    data.append(reinterpret_cast<const char*>(t->values.data()), t->values.size() * 4);
    header[t->hf_name] = {
        {"dtype", "F32"}, {"shape", t->shape}, {"data_offsets", {begin, data.size()}}};
  }
  std::string h = header.dump() + std::string(pad, ' ');
  std::string out;
  testing::AppendPod(&out, static_cast<uint64_t>(h.size()));
  return out + h + data;
}

absl::StatusOr<std::unique_ptr<ModelFile>> WriteAndLoadHf(const SyntheticModel& model,
                                                          std::string* dir_out = nullptr) {
  std::string dir = testing::MakeTempDir("rsd-hf") + "/" + model.options().name + "-hf";
  EXPECT_TRUE(model.WriteHfFolder(dir).ok());
  if (dir_out != nullptr) *dir_out = dir;
  return LoadHfFolder(dir);
}

TEST(HfReader, EveryCatalogModelRoundTrips) {
  for (const testing::SyntheticCatalogEntry& e : testing::SyntheticModelCatalog()) {
    SCOPED_TRACE(e.name);
    SyntheticModel model(e.options);
    auto loaded = WriteAndLoadHf(model);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const ModelFile& m = **loaded;
    EXPECT_EQ(m.format, "safetensors");
    EXPECT_EQ(m.config.name, e.name + "-hf");
    EXPECT_EQ(m.config.source_pairing, RopePairing::kHalf);
    testing::ExpectConfigEq(m.config, model.ExpectedConfig(), /*all=*/false);
    EXPECT_EQ(m.tensors.size(), model.tensors().size());
    const DType hf_dtype =
        (e.options.weight_dtype == DType::kF16 || e.options.weight_dtype == DType::kBF16)
            ? e.options.weight_dtype
            : DType::kF32;
    for (const testing::SyntheticTensor& t : model.tensors()) {
      SCOPED_TRACE(t.name);
      const TensorView* v = m.Find(t.name);
      ASSERT_NE(v, nullptr);
      EXPECT_EQ(v->shape, t.shape);
      EXPECT_EQ(v->dtype, hf_dtype);
      EXPECT_TRUE(testing::SameBits(testing::Dequantize(*v), t.values));
    }
  }
}

TEST(HfReader, GgufAndHfCopiesLoadToTheSameModel) {
  for (const testing::SyntheticCatalogEntry& e : testing::SyntheticModelCatalog()) {
    SCOPED_TRACE(e.name);
    SyntheticModel model(e.options);
    testing::WrittenModel w = testing::WriteBoth(model, testing::MakeTempDir("rsd-both"));
    auto g = LoadModel(w.gguf);
    auto h = LoadModel(w.hf);
    ASSERT_TRUE(g.ok()) << g.status();
    ASSERT_TRUE(h.ok()) << h.status();
    testing::ExpectConfigEq((*g)->config, (*h)->config, /*all=*/false);
    ASSERT_EQ((*g)->tensors.size(), (*h)->tensors.size());
    const bool f32 = e.options.weight_dtype == DType::kF32;
    for (const auto& [name, gt] : (*g)->tensors) {
      SCOPED_TRACE(name);
      const TensorView* ht = (*h)->Find(name);
      ASSERT_NE(ht, nullptr);
      EXPECT_EQ(gt.shape, ht->shape);
      EXPECT_TRUE(testing::SameBits(testing::Dequantize(gt), testing::Dequantize(*ht)));
      if (f32) {
        EXPECT_EQ(gt.dtype, ht->dtype);
        EXPECT_TRUE(testing::SameBytes(gt, *ht));
      }
    }
    if (f32) {
      EXPECT_EQ((*g)->fingerprint, (*h)->fingerprint);
    }
    EXPECT_EQ((*g)->tokenizer.tokens, (*h)->tokenizer.tokens);
    EXPECT_EQ((*g)->tokenizer.bos_id, (*h)->tokenizer.bos_id);
    EXPECT_EQ((*g)->tokenizer.eos_id, (*h)->tokenizer.eos_id);
    EXPECT_EQ((*g)->tokenizer.unk_id, (*h)->tokenizer.unk_id);
  }
}

TEST(HfReader, ShardedFolderWithIndex) {
  SyntheticModel model(testing::FindSyntheticModel("gqa")->options);
  std::string dir;
  auto whole = WriteAndLoadHf(model, &dir);
  ASSERT_TRUE(whole.ok()) << whole.status();
  std::vector<const testing::SyntheticTensor*> a, b;
  json index;
  for (const testing::SyntheticTensor& t : model.tensors()) {
    const bool first = t.name.rfind("blk.0.", 0) == 0 || t.name == "token_embd.weight";
    (first ? a : b).push_back(&t);
    index["weight_map"][t.hf_name] =
        first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  fs::remove(dir + "/model.safetensors");
  testing::WriteTemp(dir, "model-00001-of-00002.safetensors", F32Safetensors(a));
  testing::WriteTemp(dir, "model-00002-of-00002.safetensors", F32Safetensors(b, 3));
  testing::WriteTemp(dir, "model.safetensors.index.json", index.dump());
  auto sharded = LoadHfFolder(dir);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  EXPECT_EQ((*sharded)->mappings.size(), 2u);
  EXPECT_EQ((*sharded)->fingerprint, (*whole)->fingerprint);
  for (const auto& [name, t] : (*sharded)->tensors) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 16, 0u) << name;  // copied when misaligned
  }
}

TEST(HfReader, TiedModelWithSavedLmHead) {
  SyntheticModel model(testing::FindSyntheticModel("gqa")->options);  // tied
  std::string dir;
  ASSERT_TRUE(WriteAndLoadHf(model, &dir).ok());
  std::vector<const testing::SyntheticTensor*> all;
  for (const testing::SyntheticTensor& t : model.tensors()) all.push_back(&t);
  testing::SyntheticTensor lm_head = *model.Find("token_embd.weight");
  lm_head.hf_name = "lm_head.weight";
  all.push_back(&lm_head);
  testing::WriteTemp(dir, "model.safetensors", F32Safetensors(all));
  auto m = LoadHfFolder(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE((*m)->config.tied_embeddings);
  EXPECT_EQ((*m)->Find("output.weight"), nullptr);
}

TEST(HfReader, ChatTemplateSources) {
  SyntheticModel model(testing::FindSyntheticModel("mha")->options);
  std::string dir;
  ASSERT_TRUE(WriteAndLoadHf(model, &dir).ok());
  json cfg = json::parse(model.TokenizerConfigJson());
  cfg["chat_template"] = "{{ bos_token }}";
  testing::WriteTemp(dir, "tokenizer_config.json", cfg.dump());
  auto m = LoadHfFolder(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->chat_template, "{{ bos_token }}");
  cfg["chat_template"] = json::array(
      {{{"name", "tool_use"}, {"template", "T"}}, {{"name", "default"}, {"template", "D"}}});
  testing::WriteTemp(dir, "tokenizer_config.json", cfg.dump());
  m = LoadHfFolder(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->chat_template, "D");
  testing::WriteTemp(dir, "chat_template.jinja", "J");
  m = LoadHfFolder(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->chat_template, "J");
}

TEST(HfReader, RopeScalingVariants) {
  SyntheticModel model(testing::FindSyntheticModel("mha")->options);
  std::string dir;
  ASSERT_TRUE(WriteAndLoadHf(model, &dir).ok());
  json cfg = json::parse(model.ConfigJson());
  cfg["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 128}};
  testing::WriteTemp(dir, "config.json", cfg.dump());
  auto m = LoadHfFolder(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->config.rope_scaling, RopeScaling::kLlama3);
  EXPECT_EQ((*m)->config.rope_scale_factor, 8.0f);
  EXPECT_EQ((*m)->config.rope_original_context, 128);
  cfg["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  testing::WriteTemp(dir, "config.json", cfg.dump());
  m = LoadHfFolder(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->config.rope_scaling, RopeScaling::kLinear);
  EXPECT_EQ((*m)->config.rope_scale_factor, 2.0f);
  cfg.erase("num_key_value_heads");  // defaults to num_attention_heads
  cfg.erase("head_dim");             // defaults to hidden_size / num_attention_heads
  cfg["architectures"] = {"MistralForCausalLM"};
  testing::WriteTemp(dir, "config.json", cfg.dump());
  m = LoadHfFolder(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->config.architecture, "mistral");
  EXPECT_EQ((*m)->config.n_kv_heads, 4);
  EXPECT_EQ((*m)->config.head_dim, 16);
}

}  // namespace
}  // namespace rsd
