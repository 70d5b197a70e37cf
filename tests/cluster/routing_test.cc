// Cache-aware routing (issue #15): a router and two SmolLM2 workers; 16 sessions whose first turns
// start with one of 4 system prompts (4 rounds of one session per prompt, the prompts in a
// different order each round) are created with their first turn as the placement hint and run it.
// With the router's cache-aware placement every session after the first of its prompt lands on the
// worker holding that prompt and starts from its blocks (reused tokens reported by the turn), and
// the first sessions of the 4 prompts spread over both workers. The same workload on a cluster
// with --prefix-routing=false (placement by load alone) is the comparison; the hit rates of both
// are printed. A hit is checked on the worker's own report (TurnDone.usage.reused_tokens), not on
// the router's belief.
//
// Deduplicated migration (issue #15) on the same cluster shape: a session moved to a worker where
// another session of its tenant holds its system prompt ships only the chunks past it; the bytes
// are checked against the same session moved whole to a worker that holds nothing, and the moved
// session continues from its checkpoints exactly as a session that never moved.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
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

v1::TurnRequest PromptTurn(const std::string& session, const std::string& message, bool system) {
  v1::TurnRequest turn;
  turn.set_session_id(session);
  turn.set_message(message);
  if (system) {
    v1::ChatMessage* context = turn.add_context();
    context->set_role("system");
    context->set_content(SystemPrompt(0));
  }
  turn.set_max_tokens(8);
  return turn;
}

// Creates a session on worker `on` (the other cordoned meanwhile) and runs `messages` on it, the
// first with the system prompt.
std::string SessionOn(Cluster& c, const std::string& on, const std::string& other,
                      const std::vector<std::string>& messages,
                      std::vector<ChatOutcome>* outcomes) {
  EXPECT_TRUE(c.Cordon(other, true).ok());
  absl::StatusOr<v1::SessionInfo> s = c.Create();
  EXPECT_TRUE(c.Cordon(other, false).ok());
  EXPECT_TRUE(s.ok()) << s.status();
  if (!s.ok()) return "";
  EXPECT_EQ(s->worker(), on);
  for (size_t t = 0; t < messages.size(); ++t) {
    outcomes->push_back(Chat(c.client(), PromptTurn(s->session_id(), messages[t], t == 0)));
    EXPECT_TRUE(outcomes->back().status.ok()) << outcomes->back().status.error_message();
  }
  return s->session_id();
}

TEST(DedupMigration, AMoveToAWorkerHoldingThePromptShipsOnlyTheRest) {
  const std::string model = SmolLM2Path();
  if (model.empty()) GTEST_SKIP() << "SmolLM2 not present";
  absl::StatusOr<std::string> info =
      RunCommand({BinDir() + "/tools/rsd-run", "info", "--model", model, "--json"});
  ASSERT_TRUE(info.ok()) << info.status();
  const int64_t bpt = nlohmann::json::parse(*info)["bytes_per_token"]["residual"].get<int64_t>();
  absl::StatusOr<std::unique_ptr<Cluster>> cluster =
      Cluster::Start(model, {{"w1", {"--threads", "1"}}, {"w2", {"--threads", "1"}}});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  Cluster& c = **cluster;
  const std::vector<std::string> script = {"Which rule is about topic 3?", "And topic 5?", "Why?"};
  std::vector<ChatOutcome> donor, moved, alone;
  // The donor on w2, the session to move on w1.
  SessionOn(c, "w2", "w1", {"Which rule mentions source 4?"}, &donor);
  const std::string id = SessionOn(c, "w1", "w2", {script[0], script[1]}, &moved);

  absl::StatusOr<v1::MigrateResponse> deduped = c.Migrate(id, "w2", "residual");
  ASSERT_TRUE(deduped.ok()) << deduped.status();
  EXPECT_EQ(deduped->route(), "direct");
  // The system prompt and the chat template around it are about 490 tokens (whole chunks of 16).
  EXPECT_GE(deduped->shared_tokens(), 448) << "most of the system prompt";
  // Back to w1, which holds nothing of it now: the whole state travels.
  absl::StatusOr<v1::MigrateResponse> whole = c.Migrate(id, "w1", "residual");
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->shared_tokens(), 0);
  EXPECT_EQ(deduped->payload_bytes() + deduped->shared_tokens() * bpt, whole->payload_bytes());
  EXPECT_LT(deduped->wire_bytes(), whole->wire_bytes() / 2);
  std::printf(
      "migrating a %lld-token session: payload %lld B whole, %lld B to a worker holding its first "
      "%lld tokens (wire %lld B vs %lld B)\n",
      static_cast<long long>(whole->session().token_count()),
      static_cast<long long>(whole->payload_bytes()),
      static_cast<long long>(deduped->payload_bytes()),
      static_cast<long long>(deduped->shared_tokens()),
      static_cast<long long>(deduped->wire_bytes()), static_cast<long long>(whole->wire_bytes()));
  // Once more to w2, and on: from its checkpoints, exactly as the session that never moved.
  absl::StatusOr<v1::MigrateResponse> again = c.Migrate(id, "w2", "residual");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->payload_bytes(), deduped->payload_bytes());
  // A session that never moves, for comparison (created last: it would hold the whole prefix).
  SessionOn(c, "w1", "w2", script, &alone);
  ASSERT_EQ(alone.size(), 3u);
  const ChatOutcome next = Chat(c.client(), PromptTurn(id, script[2], false));
  ASSERT_TRUE(next.status.ok()) << next.status.error_message();
  EXPECT_EQ(next.done.worker(), "w2");
  EXPECT_EQ(next.done.restored_from(), "warm");
  EXPECT_EQ(next.tokens, alone[2].tokens);
  EXPECT_EQ(moved[1].tokens, alone[1].tokens);
  // A bad offer is refused naming what is wrong with it.
  const auto held = [&](const v1::HeldPrefixRequest& req) {
    grpc::ClientContext ctx;
    v1::HeldPrefixResponse resp;
    return c.worker("w2").HeldPrefix(&ctx, req, &resp);
  };
  v1::HeldPrefixRequest bad;
  bad.set_layer_forms(std::string(30, 'r'));
  bad.add_keys("short");
  grpc::Status st = held(bad);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("chunk key 0 is 5 bytes, not 16"), std::string::npos);
  bad.clear_keys();
  bad.set_layer_forms("rx");
  st = held(bad);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("HeldPrefix"), std::string::npos) << st.error_message();
  if (HasFailure()) std::printf("%s\n", c.Logs().c_str());
}

}  // namespace
}  // namespace rsd::testing
