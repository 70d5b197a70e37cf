// Bounded means bounded, for the whole process (issue: session state): `rsd-run chat` on SmolLM2
// for 20 turns at a 64-token hot budget (K/V checkpoints within turns, so the test spends its time
// copying, not rebuilding) with an 8 MiB warm tier and a data dir. The history grows past 2,200
// tokens, whose checkpoints (23,040 B a token of F16 K/V) are more than the bound; yet RSS stays
// within its level after the first turn plus the warm budget plus a stated fixed overhead: RocksDB
// memtables (at most 24 MiB, storage/cold_store.cc) and 16 MiB of allocator slack. The hot pool
// is fixed from the start (the budget plus one scratch block). Exactness under these budgets is
// the session tests' business (session_matrix_test, session_smollm2_test).
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cluster/cluster.h"
#include "tests/support/test_util.h"

namespace rsd::testing {
namespace {

TEST(BoundedRss, TwentyTurnsStayWithinBudgetsPlusAFixedOverhead) {
  const std::string model = SmolLM2Path();
  if (model.empty()) GTEST_SKIP() << "SmolLM2 not present";
  if (!kRssIsOurs) GTEST_SKIP() << "RSS holds a sanitizer's shadow memory in this build";
  const std::string dir = MakeTempDir("rsd-rss");
  const std::string script = dir + "/script.jsonl";
  {
    const char* kMessages[] = {
        "Tell me about the history of Rome.", "What happened next?", "Who were the emperors?",
        "Describe the architecture.", "What did people eat?", "How did the empire fall?",
        "What about the eastern part?", "Tell me about Byzantium.", "What languages were spoken?",
        "How were roads built?", "What was the army like?", "Tell me about gladiators.",
        "What were the baths like?", "How did trade work?", "What religions existed?",
        "Who was Constantine?", "What about the Senate?", "Describe a typical day.",
        "What art survives?", "Summarize everything."};
    std::ofstream out(script);
    for (const char* m : kMessages) {
      out << nlohmann::json{{"role", "user"}, {"content", m}}.dump() << "\n";
    }
  }
  constexpr int64_t kWarm = 8ll << 20, kOverhead = 40ll << 20;
  auto out = RunCommand({BinDir() + "/tools/rsd-run",
                         "chat",
                         "--model",
                         model,
                         "--script",
                         script,
                         "--data-dir",
                         dir + "/data",
                         "--session",
                         "s",
                         "--hot-budget-tokens",
                         "64",
                         "--warm-budget-bytes",
                         std::to_string(kWarm),
                         "--max-tokens",
                         "120",
                         "--spill-form",
                         "kv",
                         "--threads",
                         "1"},
                        1200);
  ASSERT_TRUE(out.ok()) << out.status();
  std::istringstream lines(*out);
  std::string line;
  int turns = 0;
  int64_t first_rss = 0, max_rss = 0, tokens = 0, cold = 0, hot0 = -1;
  while (std::getline(lines, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("rss_bytes")) continue;
    const int64_t rss = j["rss_bytes"].get<int64_t>();
    if (turns == 0) first_rss = rss;
    max_rss = std::max(max_rss, rss);
    tokens = j["token_count"].get<int64_t>();
    cold = j["cold_bytes"].get<int64_t>();
    EXPECT_LE(j["warm_bytes"].get<int64_t>(), kWarm);
    if (hot0 < 0) hot0 = j["hot_bytes"].get<int64_t>();
    EXPECT_EQ(j["hot_bytes"].get<int64_t>(), hot0) << "hot memory is not flat across turns";
    std::printf("turn %2d: %5lld tokens, RSS %6.1f MiB, warm %5.1f MiB, cold %5.1f MiB\n", turns,
                static_cast<long long>(tokens), rss / 1048576.0,
                j["warm_bytes"].get<int64_t>() / 1048576.0, cold / 1048576.0);
    turns++;
  }
  ASSERT_EQ(turns, 20);
  EXPECT_GT(tokens, 2200) << "the history did not grow enough to show anything";
  EXPECT_GT(cold, kWarm) << "nothing overflowed to RocksDB: the warm budget was never tested";
  // Held in memory, the checkpoints alone would break the bound: the test can fail.
  EXPECT_GT(tokens * 23040, kWarm + kOverhead);
  std::printf("RSS after turn 1 %.1f MiB, max %.1f MiB, bound %.1f MiB (+ warm %lld MiB + "
              "overhead %lld MiB)\n", first_rss / 1048576.0, max_rss / 1048576.0,
              (first_rss + kWarm + kOverhead) / 1048576.0, static_cast<long long>(kWarm >> 20),
              static_cast<long long>(kOverhead >> 20));
  EXPECT_LE(max_rss, first_rss + kWarm + kOverhead);
}

}  // namespace
}  // namespace rsd::testing
