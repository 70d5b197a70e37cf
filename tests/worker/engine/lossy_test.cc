// The lossy baselines behind the same eviction interface (window, StreamingLLM, H2O, TOVA, SnapKV):
// 100% match with the unbounded run when the budget holds everything, below 100% at small budgets,
// while the exact path stays at 100% everywhere.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/common/status.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "worker/engine/engine.h"

namespace rsd {
namespace {

std::vector<int32_t> Generate(const std::string& model, int block_tokens, int budget,
                              const std::string& evict, const std::vector<int32_t>& prompt, int n) {
  EngineOptions o;
  o.model_path = model;
  o.block_tokens = block_tokens;
  o.hot_budget_tokens = budget;
  o.evict = evict;
  auto e = Engine::Create(o);
  testing::OkOrFail(e.status(), "Engine::Create");
  GenerateParams p;
  p.max_tokens = n;
  p.stop_at_eos = false;
  SessionId seq = (*e)->CreateSequence();
  auto r = (*e)->Generate(seq, prompt, p);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->tokens : std::vector<int32_t>{};
}

double Match(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t same = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) same += a[i] == b[i];
  return static_cast<double>(same) / static_cast<double>(std::max(a.size(), b.size()));
}

void CheckPolicies(const std::string& model, int bt, const std::vector<int32_t>& prompt, int n,
                   int small_budget) {
  const std::vector<int32_t> ref = Generate(model, bt, 0, "exact", prompt, n);
  ASSERT_EQ(ref.size(), static_cast<size_t>(n));
  const int full = static_cast<int>(prompt.size()) + n + bt;
  for (const char* policy : {"exact", "window", "streaming", "h2o", "tova", "snapkv"}) {
    const double at_full = Match(Generate(model, bt, full, policy, prompt, n), ref);
    const double at_small = Match(Generate(model, bt, small_budget, policy, prompt, n), ref);
    std::printf("[ lossy ] %s: token match %.0f%% at full budget, %.0f%% at %d tokens\n", policy,
                100 * at_full, 100 * at_small, small_budget);
    EXPECT_EQ(at_full, 1.0) << policy;
    if (std::string(policy) == "exact") {
      EXPECT_EQ(at_small, 1.0);
    } else {
      EXPECT_LT(at_small, 1.0) << policy << " lost context yet matched every token";
    }
  }
}

TEST(Lossy, SyntheticModel) {
  const auto* entry = testing::FindSyntheticModel("mha");
  ASSERT_NE(entry, nullptr);
  testing::SyntheticModel m(entry->options);
  const std::string path = testing::MakeTempDir("rsd-lossy") + "/mha.gguf";
  ASSERT_TRUE(m.WriteGguf(path).ok());
  std::vector<int32_t> prompt = {1};
  for (int i = 0; i < 40; ++i) prompt.push_back(3 + (i * 53) % 290);
  CheckPolicies(path, 4, prompt, 40, 8);
}

TEST(Lossy, Stories260K) {
  const std::string path = testing::Stories260KPath();
  if (path.empty()) GTEST_SKIP() << "stories260K.gguf not found";
  // "Once upon a time" and its continuation, then a long generation.
  std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421};
  CheckPolicies(path, 16, prompt, 150, 32);
}

}  // namespace
}  // namespace rsd
