// stories260K (a real trained tiny Llama, F32, GQA, SentencePiece-style tokenizer) against its
// llama.cpp reference in ../shared/models: prompt tokenization and greedy continuations equal up to
// the first position where llama.cpp's top-1 margin is below 0.01 nats (llama.cpp ran with an F16
// K/V cache, so closer calls are noise).
#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "storage/common/file_util.h"
#include "tests/support/test_util.h"
#include "worker/engine/engine.h"

namespace rsd {
namespace {

TEST(Stories260K, GreedyTokensEqualLlamaCppUpToFirstCloseCall) {
  const std::string model = testing::Stories260KPath();
  if (model.empty()) {
    GTEST_SKIP() << "stories260K.gguf not found (set RSD_STORIES260K or place ../shared/models)";
  }
  auto ref_text =
      ReadFileToString(model.substr(0, model.rfind('/')) + "/stories260K.llamacpp.json");
  ASSERT_TRUE(ref_text.ok()) << ref_text.status();
  const nlohmann::json ref = nlohmann::json::parse(*ref_text);
  for (int threads : {1, 2}) {
    EngineOptions o;
    o.model_path = model;
    o.threads = threads;
    auto engine = Engine::Create(o);
    ASSERT_TRUE(engine.ok()) << engine.status();
    Engine& e = **engine;
    int compared = 0, total = 0;
    for (const auto& g : ref["greedy"]) {
      const std::string prompt = g["prompt"];
      std::vector<int32_t> want_prompt = g["prompt_tokens"].get<std::vector<int32_t>>();
      std::vector<int32_t> ids = e.EncodePrompt(prompt);
      EXPECT_EQ(ids, want_prompt) << prompt;
      std::vector<int32_t> want = g["tokens"].get<std::vector<int32_t>>();
      std::vector<double> margin = g["top1_margin_logprob"].get<std::vector<double>>();
      GenerateParams p;
      p.max_tokens = static_cast<int>(want.size());
      p.stop_at_eos = false;
      SessionId seq = e.CreateSequence();
      auto r = e.Generate(seq, want_prompt, p);
      ASSERT_TRUE(r.ok()) << r.status();
      e.DestroySequence(seq);
      size_t i = 0;
      for (; i < want.size() && margin[i] >= 0.01; ++i) {
        ASSERT_EQ(r->tokens[i], want[i]) << "'" << prompt << "' position " << i;
      }
      compared += static_cast<int>(i);
      total += static_cast<int>(want.size());
      // Past a close call the sequences may diverge; report how far they still agree.
      size_t agree = 0;
      while (agree < want.size() && r->tokens[agree] == want[agree]) ++agree;
      std::printf("[ stories260K ] '%s': %zu/%zu equal, compared up to %zu\n", prompt.c_str(),
                  agree, want.size(), i);
    }
    EXPECT_GT(compared, total / 2) << "too few positions were above the margin to mean anything";
  }
}

TEST(Stories260K, TokenizationEqualsLlamaCpp) {
  const std::string model = testing::Stories260KPath();
  if (model.empty()) GTEST_SKIP() << "stories260K.gguf not found";
  auto ref_text =
      ReadFileToString(model.substr(0, model.rfind('/')) + "/stories260K.llamacpp.json");
  ASSERT_TRUE(ref_text.ok());
  const nlohmann::json ref = nlohmann::json::parse(*ref_text);
  EngineOptions o;
  o.model_path = model;
  auto engine = Engine::Create(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  for (const auto& t : ref["tokenize"]) {
    const std::string text = t["text"];
    EXPECT_EQ((*engine)->tokenizer().Encode(text, false), t["tokens"].get<std::vector<int32_t>>())
        << text;
  }
}

}  // namespace
}  // namespace rsd
