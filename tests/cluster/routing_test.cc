// Cache-aware routing (issue #15): a router and two SmolLM2 workers; 16 sessions whose first turns
// start with one of 4 system prompts (4 rounds of one session per prompt, the prompts in a
// different order each round) are created with their first turn as the placement hint and run it.
// With the router's cache-aware placement every session after the first of its prompt lands on the
// worker holding that prompt and starts from its blocks (reused tokens reported by the turn), and
// the first sessions of the 4 prompts spread over both workers. The same workload on a cluster
// with --prefix-routing=false (placement by load alone) is the comparison; the hit rates of both
// are printed. A hit is checked on the worker's own report (TurnDone.usage.reused_tokens), not on
// the router's belief.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/cluster/cluster.h"
#include "tests/support/test_util.h"

namespace rsd::testing {
namespace {

std::string SystemPrompt(int p) {
  std::string out = absl::StrCat("You are assistant number ", p, ". House rules:\n");
  for (int i = 1; i <= 24; ++i) {
    out += absl::StrCat("Rule ", p, ".", i, ": answer topic ", (i * 7 + p) % 13,
                        " only after checking source ", (i * 11 + p) % 17, ".\n");
  }
  return out;
}

struct Placed {
  std::string worker;
  int prompt = 0;
  int64_t reused = 0;
};

// Runs the workload; per session (round * 4 + prompt) where it went and what it reused.
std::vector<Placed> RunWorkload(Cluster& c) {
  std::vector<Placed> out;
  for (int round = 0; round < 4; ++round) {
    for (int k = 0; k < 4; ++k) {
      const int p = (k * (round + 1) + round) % 4;  // another order each round
      v1::TurnRequest turn;
      turn.set_message(absl::StrCat("Which rule of round ", round, " is about topic ", k, "?"));
      v1::ChatMessage* system = turn.add_context();
      system->set_role("system");
      system->set_content(SystemPrompt(p));
      turn.set_max_tokens(1);
      v1::CreateSessionRequest create;
      *create.mutable_first_turn() = turn;
      v1::SessionInfo info;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      grpc::Status s = c.client().CreateSession(&ctx, create, &info);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) return out;
      turn.set_session_id(info.session_id());
      ChatOutcome o = Chat(c.client(), turn);
      EXPECT_TRUE(o.status.ok()) << o.status.error_message();
      out.push_back({info.worker(), p, o.done.usage().reused_tokens()});
    }
  }
  return out;
}

double HitRate(const std::vector<Placed>& placed) {
  std::set<int> seen;
  int hits = 0, chances = 0;
  for (const Placed& x : placed) {
    if (!seen.insert(x.prompt).second) {
      ++chances;
      hits += x.reused > 0;
    }
  }
  return chances > 0 ? static_cast<double>(hits) / chances : 0;
}

TEST(CacheAwareRouting, SessionsOfOnePromptFollowItsStateAcrossTwoWorkers) {
  const std::string model = SmolLM2Path();
  if (model.empty()) GTEST_SKIP() << "SmolLM2 not present";
  const std::vector<WorkerSpec> workers = {{"w1", {"--threads", "1"}}, {"w2", {"--threads", "1"}}};
  std::vector<Placed> on, off;
  {
    absl::StatusOr<std::unique_ptr<Cluster>> c = Cluster::Start(model, workers);
    ASSERT_TRUE(c.ok()) << c.status();
    on = RunWorkload(**c);
    ASSERT_EQ(on.size(), 16u) << (*c)->Logs();
  }
  {
    absl::StatusOr<std::unique_ptr<Cluster>> c =
        Cluster::Start(model, workers, {"--prefix-routing=false"});
    ASSERT_TRUE(c.ok()) << c.status();
    off = RunWorkload(**c);
    ASSERT_EQ(off.size(), 16u);
  }
  std::map<int, std::string> home;  // prompt -> the worker of its first session
  std::set<std::string> first_workers;
  for (size_t i = 0; i < on.size(); ++i) {
    const int p = on[i].prompt;
    const std::string& worker = on[i].worker;
    if (!home.count(p)) {
      home[p] = worker;
      first_workers.insert(worker);
      EXPECT_EQ(on[i].reused, 0) << "session " << i;
      continue;
    }
    EXPECT_EQ(worker, home[p]) << "session " << i << " of prompt " << p;
    EXPECT_GE(on[i].reused, 256) << "session " << i << " of prompt " << p;
  }
  EXPECT_EQ(first_workers.size(), 2u) << "the 4 prompts did not spread over both workers";
  std::printf(
      "cache-aware routing, 16 sessions of 4 prompts on 2 workers: hit rate %.0f%% with "
      "--prefix-routing, %.0f%% by load alone\n",
      100 * HitRate(on), 100 * HitRate(off));
  EXPECT_EQ(HitRate(on), 1.0);
}

}  // namespace
}  // namespace rsd::testing
