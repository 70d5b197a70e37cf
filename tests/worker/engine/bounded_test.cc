// Bounded hot memory within a turn (DESIGN.md section 4): a sequence over its hot budget keeps
// running; its oldest blocks leave the pool as residual or K/V checkpoints (the freed blocks are
// poisoned with NaN bytes) and attention rebuilds them chunk by chunk into one scratch block.
// Every sampled token and the hash of every logit row must equal the unbounded run's, bit for bit,
// and the counters must show the rebuilds really happened.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/common/status.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "worker/engine/engine.h"

namespace rsd {
namespace {

struct RunResult {
  std::vector<int32_t> tokens;
  std::vector<uint64_t> hashes;
  RebuildCounters rebuilds;
  SequenceMemory memory;
};

// Two turns on one sequence: prompt, generate, then more user tokens and generate again.
RunResult TwoTurns(const std::string& model, int budget_tokens, const std::string& form,
                   const SamplingParams& sampling, int block_tokens, int gen1, int gen2,
                   const std::string& layer_forms = "") {
  EngineOptions o;
  o.layer_forms = layer_forms;
  o.model_path = model;
  o.threads = 2;
  o.block_tokens = block_tokens;
  o.hot_budget_tokens = budget_tokens;
  o.spill_form = form;
  o.poison_freed_blocks = true;
  auto created = Engine::Create(o);
  testing::OkOrFail(created.status(), "Engine::Create");
  Engine& e = **created;
  RunResult run;
  SessionId seq = e.CreateSequence();
  GenerateParams p;
  p.sampling = sampling;
  p.stop_at_eos = false;
  p.record_logit_hashes = true;
  std::vector<int32_t> prompt = {1};
  for (int i = 0; i < 13; ++i) prompt.push_back(5 + (i * 31) % 200);
  p.max_tokens = gen1;
  auto r1 = e.Generate(seq, prompt, p);
  EXPECT_TRUE(r1.ok()) << r1.status();
  std::vector<int32_t> user = {7, 8, 9, 10, 11, 12, 13};
  p.max_tokens = gen2;
  auto r2 = e.Generate(seq, user, p);
  EXPECT_TRUE(r2.ok()) << r2.status();
  if (r1.ok() && r2.ok()) {
    run.tokens = r1->tokens;
    run.tokens.insert(run.tokens.end(), r2->tokens.begin(), r2->tokens.end());
    run.hashes = r1->logit_hashes;
    run.hashes.insert(run.hashes.end(), r2->logit_hashes.begin(), r2->logit_hashes.end());
  }
  run.rebuilds = e.model().rebuild_counters();
  run.memory = e.SequenceMemoryUse(seq);
  return run;
}

void ExpectBoundedEqualsUnbounded(const std::string& path, int block_tokens, int gen1, int gen2,
                                  const std::vector<int>& budgets) {
  for (const bool sampled : {false, true}) {
    SamplingParams sp;
    if (sampled) {
      sp.temperature = 0.9f;
      sp.top_k = 40;
      sp.seed = 1234;
    }
    SCOPED_TRACE(sampled ? "seeded sampling" : "greedy");
    const RunResult ref = TwoTurns(path, 0, "residual", sp, block_tokens, gen1, gen2);
    ASSERT_EQ(ref.tokens.size(), static_cast<size_t>(gen1 + gen2));
    EXPECT_EQ(ref.rebuilds.from_residual + ref.rebuilds.from_kv, 0u);
    for (const char* form : {"residual", "kv"}) {
      for (int budget : budgets) {
        SCOPED_TRACE(std::string(form) + " budget " + std::to_string(budget) + " tokens");
        const RunResult got = TwoTurns(path, budget, form, sp, block_tokens, gen1, gen2);
        EXPECT_EQ(got.tokens, ref.tokens);
        EXPECT_EQ(got.hashes, ref.hashes) << "logits differ";
        const int budget_blocks = std::max(1, (budget + block_tokens - 1) / block_tokens);
        // Budget plus the one scratch block, at every step.
        EXPECT_LE(got.memory.peak_hot_blocks, budget_blocks + 1);
        EXPECT_GT(got.memory.evicted_blocks, 0);
        if (std::string(form) == "kv") {
          EXPECT_GT(got.rebuilds.from_kv, 0u);
          EXPECT_EQ(got.rebuilds.from_residual, 0u);
        } else {
          EXPECT_GT(got.rebuilds.from_residual, 0u);
          EXPECT_GT(got.rebuilds.from_tokens, 0u);  // layer 0 from the token embedding
          EXPECT_EQ(got.rebuilds.from_kv, 0u);
        }
        std::printf(
            "[ bounded ] %s budget %d: peak %d blocks, %d evicted, rebuilt kv %llu "
            "residual %llu tokens %llu\n",
            form, budget, got.memory.peak_hot_blocks, got.memory.evicted_blocks,
            static_cast<unsigned long long>(got.rebuilds.from_kv),
            static_cast<unsigned long long>(got.rebuilds.from_residual),
            static_cast<unsigned long long>(got.rebuilds.from_tokens));
      }
    }
  }
}

TEST(Bounded, SyntheticModelsBitIdenticalUnderEveryBudgetAndForm) {
  for (const char* name : {"mha", "gqa"}) {
    SCOPED_TRACE(name);
    const auto* entry = testing::FindSyntheticModel(name);
    ASSERT_NE(entry, nullptr);
    testing::SyntheticModel model(entry->options);
    const std::string path = testing::MakeTempDir("rsd-bounded") + "/" + name + ".gguf";
    ASSERT_TRUE(model.WriteGguf(path).ok());
    // Budgets: below one block (rounds up to one), a few blocks, about half the history.
    ExpectBoundedEqualsUnbounded(path, 4, 30, 20, {1, 12, 36});
  }
}

// Per-layer plans (what "auto" produces): mixed kv and residual layers, layer 0 from the token
// embedding or from K/V, are exact too; and "auto" itself.
TEST(Bounded, MixedPerLayerFormsAndAutoAreBitIdentical) {
  const auto* entry = testing::FindSyntheticModel("gqa");  // 3 layers
  ASSERT_NE(entry, nullptr);
  testing::SyntheticModel model(entry->options);
  const std::string path = testing::MakeTempDir("rsd-bounded-mixed") + "/gqa.gguf";
  ASSERT_TRUE(model.WriteGguf(path).ok());
  SamplingParams greedy;
  const RunResult ref = TwoTurns(path, 0, "residual", greedy, 4, 20, 12);
  for (const char* plan : {"rkr", "krk", "kkr"}) {
    const RunResult got = TwoTurns(path, 4, "residual", greedy, 4, 20, 12, plan);
    EXPECT_EQ(got.tokens, ref.tokens) << plan;
    EXPECT_EQ(got.hashes, ref.hashes) << plan;
    EXPECT_GT(got.rebuilds.from_kv, 0u) << plan;
    EXPECT_GT(got.rebuilds.from_residual, 0u) << plan;
  }
  const RunResult autoplan = TwoTurns(path, 4, "auto", greedy, 4, 20, 12);
  EXPECT_EQ(autoplan.tokens, ref.tokens);
  EXPECT_EQ(autoplan.hashes, ref.hashes);
}

TEST(Bounded, Stories260KBitIdenticalAtOneBlock) {
  const std::string path = testing::Stories260KPath();
  if (path.empty()) GTEST_SKIP() << "stories260K.gguf not found";
  ExpectBoundedEqualsUnbounded(path, 16, 80, 40, {16, 48});
}

}  // namespace
}  // namespace rsd
