// Bounded means bounded, on the real SmolLM2 (Q4_1): a 1,000-token prompt and a continuation under
// a one-block hot budget. The pool (the allocator every K/V byte goes through, rebuild scratch
// included) never holds more than the budget plus one scratch block (one chunk for every layer),
// and every logit equals the unbounded run's (per-step hashes). Each bounded step rebuilds the
// whole prompt's K/V: instrumented (testing::ShortRun) the continuation is 6 tokens, not 24.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/common/status.h"
#include "tests/support/test_util.h"
#include "worker/engine/engine.h"

namespace rsd {
namespace {

struct Out {
  std::vector<int32_t> tokens;
  std::vector<uint64_t> hashes;
  SequenceMemory memory;
  RebuildCounters rebuilds;
  size_t block_bytes = 0;
};

int Steps() { return testing::ShortRun() ? 6 : 24; }

Out Run1000(const std::string& model, int budget, const std::string& form) {
  EngineOptions o;
  o.model_path = model;
  o.threads = 2;
  o.hot_budget_tokens = budget;
  o.spill_form = form;
  o.poison_freed_blocks = true;
  auto e = Engine::Create(o);
  testing::OkOrFail(e.status(), "Engine::Create");
  Engine& engine = **e;
  std::string text;
  for (int i = 0; text.size() < 8000; ++i) {
    text += "Paragraph " + std::to_string(i) +
            ": the quick brown fox jumps over the lazy dog while the river runs to the sea, "
            "and every morning the baker opens the shop at seven. ";
  }
  std::vector<int32_t> prompt = engine.EncodePrompt(text);
  testing::TrueOrFail(prompt.size() >= 1000, "prompt.size() >= 1000");
  prompt.resize(1000);
  GenerateParams p;
  p.max_tokens = Steps();
  p.stop_at_eos = false;
  p.record_logit_hashes = true;
  SessionId seq = engine.CreateSequence();
  auto r = engine.Generate(seq, prompt, p);
  EXPECT_TRUE(r.ok()) << r.status();
  Out out;
  if (r.ok()) {
    out.tokens = r->tokens;
    out.hashes = r->logit_hashes;
  }
  out.memory = engine.SequenceMemoryUse(seq);
  out.rebuilds = engine.model().rebuild_counters();
  out.block_bytes = engine.pool().block_bytes();
  return out;
}

TEST(SmolLM2Bounded, OneBlockOverAThousandTokensIsBoundedAndExact) {
  const std::string model = testing::SmolLM2Path();
  if (model.empty()) GTEST_SKIP() << "SmolLM2 not found: run tools/fetch-model.sh";
  const Out ref = Run1000(model, 0, "kv");
  ASSERT_EQ(ref.tokens.size(), static_cast<size_t>(Steps()));
  for (const char* form : {"kv", "auto"}) {
    SCOPED_TRACE(form);
    const Out got = Run1000(model, 16, form);  // one block of 16 tokens
    EXPECT_EQ(got.tokens, ref.tokens);
    EXPECT_EQ(got.hashes, ref.hashes);
    EXPECT_LE(got.memory.peak_hot_blocks, 2) << "budget (1 block) + one scratch block";
    EXPECT_GE(got.memory.evicted_blocks, 60);
    EXPECT_GT(got.rebuilds.from_kv + got.rebuilds.from_residual, 0u);
    std::printf(
        "[ SmolLM2 bounded ] %s: peak %d blocks = %zu bytes (unbounded: %d blocks = %zu "
        "bytes); %d blocks evicted, %lld checkpoint bytes; rebuilt kv %llu residual "
        "%llu tokens %llu\n",
        form, got.memory.peak_hot_blocks, got.memory.peak_hot_blocks * got.block_bytes,
        ref.memory.peak_hot_blocks, ref.memory.peak_hot_blocks * ref.block_bytes,
        got.memory.evicted_blocks, static_cast<long long>(got.memory.checkpoint_bytes),
        static_cast<unsigned long long>(got.rebuilds.from_kv),
        static_cast<unsigned long long>(got.rebuilds.from_residual),
        static_cast<unsigned long long>(got.rebuilds.from_tokens));
  }
}

}  // namespace
}  // namespace rsd
