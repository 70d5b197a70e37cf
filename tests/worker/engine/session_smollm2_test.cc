// The pairwise subset of the session matrix on the real SmolLM2 (Q4_1): per-step logit hashes of
// bounded, spilled and restored runs equal the unbounded never-spilled run's.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/common/status.h"
#include "tests/support/test_util.h"
#include "tests/support/test_worker.h"
#include "worker/engine/session_manager.h"

namespace rsd {
namespace {

const std::vector<std::string> kTurns = {"What is the capital of France?", "And of Italy?",
                                         "Write one sentence about the sea.", "Thanks!"};

std::vector<std::vector<uint64_t>> RunTurns(const std::string& model, int budget, SpillForm form,
                                            bool restart, std::vector<std::string>* restored) {
  EngineOptions o;
  o.model_path = model;
  o.threads = 2;
  o.hot_budget_tokens = budget;
  o.spill_form = form == SpillForm::kKv ? "kv" : "residual";
  o.keep_residuals = form == SpillForm::kResidual;
  o.poison_freed_blocks = true;
  SessionManagerOptions so;
  so.data_dir = testing::MakeTempDir("rsd-smol-sessions");
  testing::TestWorker w(o, so);
  testing::OkOrFail(w.Start(), "starting the worker");
  std::vector<std::vector<uint64_t>> hashes;
  for (size_t t = 0; t < kTurns.size(); ++t) {
    auto id = w.sessions().OpenOrCreate("smol");
    EXPECT_TRUE(id.ok());
    GenerateParams p;
    p.max_tokens = 12;
    p.record_logit_hashes = true;
    if (t % 2 == 1) {
      p.sampling.temperature = 0.7f;
      p.sampling.seed = 77 + t;
    }
    auto r = w.Chat(*id, kTurns[t], p);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) break;
    hashes.push_back(r->generation.logit_hashes);
    restored->push_back(r->restored_from);
    EXPECT_TRUE(w.sessions().Spill(*id, form).ok());
    if (restart) {
      EXPECT_TRUE(w.sessions().DemoteToCold(*id).ok());
      testing::OkOrFail(w.Restart(), "restarting the worker");
    }
  }
  return hashes;
}

TEST(SmolLM2Sessions, PairwiseBudgetsFormsAndRestoresMatchUnbounded) {
  const std::string model = testing::SmolLM2Path();
  if (model.empty()) GTEST_SKIP() << "SmolLM2 not found: run tools/fetch-model.sh";
  std::vector<std::string> unused;
  const auto ref = RunTurns(model, 0, SpillForm::kNone, false, &unused);
  ASSERT_EQ(ref.size(), kTurns.size());
  struct Case {
    int budget;
    SpillForm form;
    bool restart;
  };
  // Pairwise over budget {one block, unbounded} x form {residual, kv, tokens} x restore
  // {warm, cold after restart}: every pair of values appears in some case.
  const std::vector<Case> cases = {
      {16, SpillForm::kResidual, true}, {16, SpillForm::kKv, false},
      {16, SpillForm::kTokens, true},   {0, SpillForm::kResidual, false},
      {0, SpillForm::kKv, true},        {0, SpillForm::kTokens, false}};
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(SpillFormName(c.form)) + " budget " + std::to_string(c.budget) +
                 (c.restart ? " restart" : " warm"));
    std::vector<std::string> restored;
    const auto got = RunTurns(model, c.budget, c.form, c.restart, &restored);
    ASSERT_EQ(got.size(), ref.size());
    for (size_t t = 0; t < ref.size(); ++t) EXPECT_EQ(got[t], ref[t]) << "turn " << t;
    const std::string want = c.form == SpillForm::kTokens ? "tokens" : c.restart ? "cold" : "warm";
    for (size_t t = 1; t < restored.size(); ++t) EXPECT_EQ(restored[t], want) << "turn " << t;
  }
}

}  // namespace
}  // namespace rsd
