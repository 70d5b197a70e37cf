// Our engine against llama.cpp's committed goldens (tools/goldens/*.py wrote them; CI never runs
// llama.cpp). Synthetic GGUF models: greedy tokens equal up to the first position whose llama.cpp
// top-1 margin is below 0.01 nats (float weights) or 0.25 nats (8- and 4-bit weights). The
// goldens come from llama.cpp with an F32 K/V cache, its one configuration whose attention is F32
// throughout; before our cache became F16 we matched it bit for bit on these models. Rounding K/V
// to F16 moves our top-1 gaps from its by at most 0.005 nats with float weights and by up to
// 0.22 nats with quantized weights, where a tiny change flips the 8-bit rounding of activations
// (llama.cpp's own default F16 cache rounds Q and the softmax to F16 besides). SmolLM2 (Q4_1):
// teacher-forced over llama.cpp's greedy continuations, our top-1 equals llama.cpp's wherever its
// margin is >= 0.1 nats, and greedy generation of the templated "What is the capital of France?"
// matches up to the first margin below 0.1 nats. (See the teacher-forced test for what "agrees" can
// mean at that margin.)
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "storage/common/file_util.h"
#include "storage/common/status.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "tests/support/test_worker.h"
#include "worker/engine/engine.h"
#include "worker/engine/sampler.h"

namespace rsd {
namespace {

nlohmann::json LoadGolden(const std::string& name) {
  auto text = ReadFileToString(testing::SourceDir() + "/tests/goldens/" + name);
  testing::OkOrFail(text.status(), "reading the golden file");
  return nlohmann::json::parse(*text);
}

std::unique_ptr<Engine> MakeEngine(const std::string& path, int threads) {
  EngineOptions o;
  o.model_path = path;
  o.threads = threads;
  auto e = Engine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(e).value() : nullptr;
}

TEST(SyntheticGoldens, GreedyTokensEqualLlamaCppUpToFirstCloseCall) {
  const nlohmann::json golden = LoadGolden("synthetic.json");
  const std::string dir = testing::MakeTempDir("rsd-goldens");
  int models = 0;
  for (const auto& m : golden["models"]) {
    const std::string name = m["name"];
    SCOPED_TRACE(name);
    const auto* entry = testing::FindSyntheticModel(name);
    ASSERT_NE(entry, nullptr) << "catalog lacks " << name;
    testing::SyntheticModel model(entry->options);
    const std::string path = dir + "/" + name + ".gguf";
    ASSERT_TRUE(model.WriteGguf(path).ok());
    auto e = MakeEngine(path, 2);
    ASSERT_TRUE(e);
    const DType wt = entry->options.weight_dtype;
    const bool quantized = wt == DType::kQ8_0 || wt == DType::kQ4_0 || wt == DType::kQ4_1;
    const double min_margin = quantized ? 0.25 : 0.01;
    for (const auto& p : m["prompts"]) {
      std::vector<int32_t> prompt = p["prompt"].get<std::vector<int32_t>>();
      std::vector<int32_t> want = p["greedy"].get<std::vector<int32_t>>();
      // One margin per position of prompt + greedy: generated token i is predicted at position
      // prompt.size() - 1 + i.
      std::vector<double> margin = p["teacher_forced_margin"].get<std::vector<double>>();
      ASSERT_EQ(margin.size(), prompt.size() + want.size());
      GenerateParams g;
      g.max_tokens = static_cast<int>(want.size());
      g.stop_at_eos = false;
      SessionId seq = e->CreateSequence();
      auto r = e->Generate(seq, prompt, g);
      ASSERT_TRUE(r.ok()) << r.status();
      e->DestroySequence(seq);
      // Teacher-forced over prompt + greedy: our top-1 is llama.cpp's wherever its margin is at
      // least min_margin, at every position (greedy generation below stops at the first closer
      // call, since a different token there changes everything after it).
      std::vector<int32_t> all = prompt;
      all.insert(all.end(), want.begin(), want.end());
      const std::vector<float> logits = testing::AllPositionLogits(*e, all);
      ASSERT_EQ(logits.size(), all.size() * e->config().vocab_size);
      const int vocab = e->config().vocab_size;
      int checked = 0;
      for (size_t j = 0; j < want.size(); ++j) {
        const size_t pos = prompt.size() - 1 + j;
        if (margin[pos] < min_margin) continue;
        const float* lg = logits.data() + pos * vocab;
        EXPECT_EQ(std::max_element(lg, lg + vocab) - lg, want[j]) << "teacher-forced at " << j;
        ++checked;
      }
      EXPECT_GT(checked, static_cast<int>(want.size()) / 2);
      size_t i = 0;
      for (; i < want.size() && margin[prompt.size() - 1 + i] >= min_margin; ++i) {
        ASSERT_EQ(r->tokens[i], want[i]) << "position " << i;
      }
      std::printf(
          "[ %s ] prompt of %zu: teacher-forced top-1 equal at %d of %zu; greedy equal "
          "through %zu (first margin < %.2f)\n",
          name.c_str(), prompt.size(), checked, want.size(), i, min_margin);
    }
    ++models;
  }
  EXPECT_GE(models, 4);
}

class SmolLM2Goldens : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = testing::SmolLM2Path();
    if (path_.empty()) GTEST_SKIP() << "SmolLM2 not found: run tools/fetch-model.sh";
    golden_ = LoadGolden("smollm2.json");
  }
  std::string path_;
  nlohmann::json golden_;
};

// llama.cpp quantizes activations to 8 bits (so do we, the same way), which makes its logits noisy
// well above 0.1 nats: llama.cpp's own decode path (one token at a time) and its batched path
// disagree on the top-1 at positions whose batched margin reaches ~0.4 nats. The goldens show it:
// "tokens" are llama.cpp's incremental greedy choices, "top1" its batched pass's. We require
// agreement at every position whose margin exceeds the largest margin at which llama.cpp flips
// against itself, and report the agreement at 0.1 next to llama.cpp's own.
TEST_F(SmolLM2Goldens, TeacherForcedTop1AgreesWhereLlamaCppIsConfident) {
  auto e = MakeEngine(path_, 2);
  ASSERT_TRUE(e);
  double max_self_flip = 0;
  int self_confident_flips = 0;
  for (const auto& g : golden_["greedy"]) {
    for (size_t i = 0; i < g["tokens"].size(); ++i) {
      if (g["tokens"][i] != g["top1"][i]) {
        max_self_flip = std::max(max_self_flip, g["top1_margin"][i].get<double>());
        self_confident_flips += g["top1_margin"][i].get<double>() >= 0.1;
      }
    }
  }
  int confident = 0, confident_agree = 0, all = 0, all_agree = 0, prompts = 0;
  for (const auto& g : golden_["greedy"]) {
    std::vector<int32_t> prompt = g["prompt_tokens"].get<std::vector<int32_t>>();
    std::vector<int32_t> cont = g["tokens"].get<std::vector<int32_t>>();
    std::vector<int32_t> top1 = g["top1"].get<std::vector<int32_t>>();
    std::vector<double> margin = g["top1_margin"].get<std::vector<double>>();
    if (g["kind"] == "raw") {
      EXPECT_EQ(e->EncodePrompt(g["prompt"].get<std::string>()), prompt) << g["prompt"];
    } else if (g["messages"].size() == 1) {
      EXPECT_EQ(e->chat_template().UserTurn(g["messages"][0]["content"], true), prompt);
    }
    // One teacher-forced pass over prompt + continuation (all but its last token).
    std::vector<int32_t> seq_tokens = prompt;
    seq_tokens.insert(seq_tokens.end(), cont.begin(), cont.end() - 1);
    const std::vector<float> logits = testing::AllPositionLogits(*e, seq_tokens);
    const int vocab = e->config().vocab_size;
    ASSERT_EQ(logits.size(), seq_tokens.size() * vocab);
    for (size_t i = 0; i < cont.size(); ++i) {
      const size_t row = prompt.size() - 1 + i;
      const float* row_logits = logits.data() + row * vocab;
      const int32_t mine = ArgMax(std::span<const float>(row_logits, vocab));
      ++all;
      all_agree += mine == top1[i];
      if (margin[i] >= 0.1) {
        ++confident;
        confident_agree += mine == top1[i];
        if (mine != top1[i]) {
          std::printf(
              "[ SmolLM2 ] prompt %d position %zu: llama.cpp margin %.3f, ours prefers %d "
              "by %.3f\n",
              prompts, i, margin[i], mine, row_logits[mine] - row_logits[top1[i]]);
        }
      }
      if (margin[i] > max_self_flip) {
        EXPECT_EQ(mine, top1[i]) << "prompt " << prompts << " position " << i << " margin "
                                 << margin[i];
      }
    }
    ++prompts;
  }
  std::printf(
      "[ SmolLM2 ] %d prompts; top-1 agreement %d/%d (%.1f%%) overall; at margin >= 0.1: "
      "%d/%d agree (llama.cpp against itself, batched vs one token at a time: %d "
      "disagree, flips up to margin %.3f)\n",
      prompts, all_agree, all, 100.0 * all_agree / all, confident_agree, confident,
      self_confident_flips, max_self_flip);
  EXPECT_GE(prompts, 10);
}

TEST_F(SmolLM2Goldens, CapitalOfFranceGreedyEqualsLlamaCpp) {
  auto e = MakeEngine(path_, 2);
  ASSERT_TRUE(e);
  bool found = false;
  for (const auto& g : golden_["greedy"]) {
    if (g["kind"] != "chat" || g["messages"].size() != 1 ||
        g["messages"][0]["content"] != "What is the capital of France?") {
      continue;
    }
    found = true;
    std::vector<int32_t> prompt =
        e->chat_template().UserTurn("What is the capital of France?", true);
    ASSERT_EQ(prompt, g["prompt_tokens"].get<std::vector<int32_t>>());
    std::vector<int32_t> want = g["tokens"].get<std::vector<int32_t>>();
    std::vector<double> margin = g["top1_margin"].get<std::vector<double>>();
    GenerateParams p;
    p.max_tokens = static_cast<int>(want.size());
    p.stop_at_eos = false;
    SessionId seq = e->CreateSequence();
    auto r = e->Generate(seq, prompt, p);
    ASSERT_TRUE(r.ok()) << r.status();
    size_t i = 0;
    for (; i < want.size() && margin[i] >= 0.1; ++i) ASSERT_EQ(r->tokens[i], want[i]) << i;
    std::printf(
        "[ SmolLM2 ] capital of France: %zu tokens equal before the first margin < 0.1; "
        "text: %s\n",
        i, r->text.c_str());
  }
  EXPECT_TRUE(found) << "golden lacks the capital-of-France chat prompt";
}

}  // namespace
}  // namespace rsd
