// The full matrix of the session-state issue on a synthetic GQA model with a 2,048-token context:
// a 20-turn scripted conversation under hot budgets {one block, a few blocks, about half the
// history, unbounded} x forms {residual, kv, auto within and between turns; tokens between turns}
// x restore from {warm, cold, cold after a process restart}. Every generated token and every
// per-step logit hash equals the unbounded, never-spilled run's. Instrumented (tools/asan.sh), the
// conversation is 8 turns (testing::ShortRun): every case still restores from several blocks.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/common/status.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "tests/support/test_worker.h"
#include "worker/engine/session_manager.h"

namespace rsd {
namespace {

std::vector<std::string> Script() {
  const int n = testing::ShortRun() ? 8 : 20;
  std::vector<std::string> turns;
  const char* words[] = {"hello", "tell me more", "why?",   "a story", "and then",
                         "ok",    "go on",        "how so", "explain", "thanks"};
  for (int t = 0; t < n; ++t) turns.push_back(words[t % 10]);
  return turns;
}

struct Outcome {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<uint64_t>> hashes;
  std::vector<std::string> restored;
  int64_t history_tokens = 0;  // after the last turn
};

Outcome RunMatrixCase(const std::string& model, int budget, const std::string& form,
                      const std::string& where, int max_tokens) {
  const bool tokens = form == "tokens";
  EngineOptions o;
  o.model_path = model;
  o.block_tokens = 8;
  o.hot_budget_tokens = budget;
  o.spill_form = tokens || form == "none" ? "residual" : form;
  o.keep_residuals = true;
  o.poison_freed_blocks = true;
  SessionManagerOptions so;
  so.data_dir = testing::MakeTempDir("rsd-matrix");
  testing::TestWorker w(o, so);
  testing::OkOrFail(w.Start(), "starting the worker");
  auto spill = ParseSpillForm(form);
  testing::OkOrFail(spill.status(), "ParseSpillForm");
  Outcome out;
  const auto script = Script();
  for (size_t t = 0; t < script.size(); ++t) {
    auto id = w.sessions().OpenOrCreate("m");
    testing::OkOrFail(id.status(), "SessionManager::OpenOrCreate");
    GenerateParams p;
    p.max_tokens = max_tokens;
    p.record_logit_hashes = true;
    if (t % 3 == 2) {
      p.sampling.temperature = 0.9f;
      p.sampling.seed = 500 + t;
    }
    auto r = w.Chat(*id, script[t], p);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return out;
    out.tokens.push_back(r->generation.tokens);
    out.hashes.push_back(r->generation.logit_hashes);
    out.restored.push_back(r->restored_from);
    out.history_tokens = r->history_tokens;
    EXPECT_TRUE(w.sessions().Spill(*id, *spill).ok());
    if (where != "warm" && *spill != SpillForm::kNone) {
      EXPECT_TRUE(w.sessions().DemoteToCold(*id).ok());
    }
    if (where == "restart") testing::OkOrFail(w.Restart(), "restarting the worker");
  }
  return out;
}

// Budgets: one block (a budget of 1 token rounds up), a few blocks, about half the history (whole
// blocks of 8), unbounded.
void RunMatrix(const std::string& path, int max_tokens) {
  const Outcome ref = RunMatrixCase(path, 0, "none", "warm", max_tokens);
  ASSERT_EQ(ref.tokens.size(), Script().size());
  const int half = static_cast<int>(ref.history_tokens / 16 * 8);
  const std::vector<int> budgets = {1, 24, half, 0};
  // Every bounded budget is below the history, so every bounded case spills within turns.
  ASSERT_LT(24, half);
  std::printf("history: %lld tokens after %zu turns\n", static_cast<long long>(ref.history_tokens),
              ref.tokens.size());
  int cases = 0;
  for (int budget : budgets) {
    for (const char* form : {"residual", "kv", "auto", "tokens"}) {
      for (const char* where : {"warm", "cold", "restart"}) {
        SCOPED_TRACE(std::string(form) + " from " + where + ", budget " + std::to_string(budget));
        const Outcome got = RunMatrixCase(path, budget, form, where, max_tokens);
        ASSERT_EQ(got.tokens.size(), ref.tokens.size());
        for (size_t t = 0; t < ref.tokens.size(); ++t) {
          ASSERT_EQ(got.tokens[t], ref.tokens[t]) << "turn " << t;
          ASSERT_EQ(got.hashes[t], ref.hashes[t]) << "turn " << t;
        }
        const std::string want = std::string(form) == "tokens"  ? "tokens"
                                 : std::string(where) == "warm" ? "warm"
                                                                : "cold";
        for (size_t t = 1; t < got.restored.size(); ++t) ASSERT_EQ(got.restored[t], want) << t;
        ++cases;
      }
    }
  }
  EXPECT_EQ(cases, static_cast<int>(budgets.size()) * 12);
}

std::string LongContextSynthetic(const std::string& name) {
  const auto* entry = testing::FindSyntheticModel(name);
  testing::TrueOrFail(entry != nullptr, "entry != nullptr");
  testing::SyntheticModelOptions opt = entry->options;
  opt.context_length = 2048;
  testing::SyntheticModel model(opt);
  const std::string path = testing::MakeTempDir("rsd-matrix-model") + "/" + name + "-2k.gguf";
  testing::OkOrFail(model.WriteGguf(path), "model.WriteGguf(path)");
  return path;
}

TEST(SessionMatrix, SyntheticGqaTwentyTurns) { RunMatrix(LongContextSynthetic("gqa"), 8); }

TEST(SessionMatrix, SyntheticMhaTwentyTurns) { RunMatrix(LongContextSynthetic("mha"), 8); }

TEST(SessionMatrix, Stories260KTwentyTurns) {
  const std::string path = testing::Stories260KPath();
  if (path.empty()) GTEST_SKIP() << "stories260K.gguf not found";
  // A 512-token context: 20 short turns of 4 generated tokens fit.
  RunMatrix(path, 4);
}

}  // namespace
}  // namespace rsd
