// A process killed at each step of a migration (DESIGN.md section 5): the source in the middle of
// sending, the target after receiving the whole stream and after making the import durable, the
// router after the target imported and after the journal switched the owner. Each process dies as
// kill -9 would at that exact step (RSD_CRASH_AT, storage/common/crash_point.h) and is restarted
// on its data directory. Afterwards exactly one worker holds the session — the journal's owner, at
// the journal's epoch — no committed turn is lost, the next turn equals an undisturbed `rsd-run
// chat` token for token, and the migration can be done again.
#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/cluster/cluster.h"
#include "tests/support/test_util.h"

namespace rsd::testing {
namespace {

constexpr int kMaxTokens = 8;

const std::vector<std::string>& Script() {
  static const std::vector<std::string> messages = {"Hi!", "What is a cat?", "Name a color.",
                                                    "Tell me a joke.", "Where is Paris?"};
  return messages;
}

v1::TurnRequest Turn(const std::string& session, int t) {
  v1::TurnRequest req;
  req.set_session_id(session);
  req.set_turn_id(absl::StrCat("turn-", t));
  req.set_message(Script()[t]);
  req.set_max_tokens(kMaxTokens);
  req.mutable_sampling()->set_temperature(0.0f);
  req.mutable_sampling()->set_seed(7 + t);
  return req;
}

struct CrashCase {
  const char* point;  // RSD_CRASH_AT
  const char* dies;   // "w1" (the source), "w2" (the target) or "router"
  const char* owner;  // the journal's owner afterwards
};

// The epoch a worker holds `session` at, or 0 if it does not hold it.
uint64_t HeldEpoch(Cluster& c, const std::string& worker, const std::string& session) {
  for (const v1::SessionInfo& s : HeldSessions(c, worker)) {
    if (s.session_id() == session) return s.epoch();
  }
  return 0;
}

class MigrationCrashTest : public ::testing::TestWithParam<CrashCase> {
 protected:
  static void SetUpTestSuite() {
    model_ = new std::string(SmolLM2Path());
    if (model_->empty()) return;
    auto ref = RsdRunChat(*model_, Script(), kMaxTokens, 0.0f, 0, 7);
    ASSERT_TRUE(ref.ok()) << ref.status();
    reference_ = new std::vector<std::vector<int32_t>>(*ref);
  }
  void SetUp() override {
    if (model_->empty()) GTEST_SKIP() << "SmolLM2 not present (tools/fetch-model.sh)";
  }
  // Turn t through the router: it must answer on `worker` with the undisturbed tokens.
  void ExpectTurn(Cluster& c, const std::string& id, int t, const std::string& worker) {
    ChatOutcome o = Chat(c.client(), Turn(id, t), 120);
    ASSERT_TRUE(o.status.ok()) << "turn " << t << ": " << o.status.error_message();
    EXPECT_EQ(o.done.worker(), worker) << "turn " << t;
    EXPECT_EQ(o.done.turn(), static_cast<uint32_t>(t + 1)) << "a committed turn was lost";
    EXPECT_EQ(o.tokens, (*reference_)[t]) << "turn " << t;
  }
  static std::string* model_;
  static std::vector<std::vector<int32_t>>* reference_;
};

std::string* MigrationCrashTest::model_ = nullptr;
std::vector<std::vector<int32_t>>* MigrationCrashTest::reference_ = nullptr;

TEST_P(MigrationCrashTest, AProcessKilledAtTheStepLeavesOneExactCopy) {
  const CrashCase& k = GetParam();
  // Every process gets the variable; only the one that reaches the point dies. A heartbeat timeout
  // longer than the test keeps failover out of it: the killed process is restarted instead.
  ::setenv("RSD_CRASH_AT", k.point, 1);
  auto cluster = Cluster::Start(*model_, {{"w1", {}}, {"w2", {}}}, {"--heartbeat-timeout", "120"});
  ::unsetenv("RSD_CRASH_AT");
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  Cluster& c = **cluster;
  ASSERT_TRUE(c.Cordon("w2", true).ok());
  absl::StatusOr<v1::SessionInfo> created = c.Create();
  ASSERT_TRUE(created.ok()) << created.status();
  const std::string id = created->session_id();
  ASSERT_TRUE(c.Cordon("w2", false).ok());
  for (int t = 0; t < 3; ++t) ExpectTurn(c, id, t, "w1");

  absl::StatusOr<v1::MigrateResponse> moved = c.Migrate(id, "w2", "auto");
  EXPECT_FALSE(moved.ok()) << "the migration was answered although " << k.dies << " died";
  Process& dead = std::string(k.dies) == "router" ? c.router_process() : c.worker_process(k.dies);
  ASSERT_EQ(dead.Wait(30), 128 + SIGKILL) << k.dies << " did not die at " << k.point;
  ASSERT_TRUE((std::string(k.dies) == "router" ? c.RestartRouter() : c.RestartWorker(k.dies)).ok());

  // Re-registration drops what the journal does not name; wait for one copy, the owner's.
  const std::string other = std::string(k.owner) == "w1" ? "w2" : "w1";
  absl::StatusOr<v1::SessionInfo> journal = DescribeSession(c, id);
  ASSERT_TRUE(journal.ok()) << journal.status();
  for (int i = 0; i < 100 && HeldEpoch(c, other, id) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(journal->worker(), k.owner);
  EXPECT_EQ(journal->epoch(), std::string(k.owner) == "w1" ? 1u : 2u);
  EXPECT_EQ(journal->turns(), 3u);
  EXPECT_EQ(HeldEpoch(c, k.owner, id), journal->epoch()) << "the owner lost its copy";
  EXPECT_EQ(HeldEpoch(c, other, id), 0u) << other << " kept a copy the journal does not name";

  ExpectTurn(c, id, 3, k.owner);
  if (std::string(k.owner) == "w1") {
    absl::StatusOr<v1::MigrateResponse> again = c.Migrate(id, "w2", "auto");
    ASSERT_TRUE(again.ok()) << again.status();
  }
  ExpectTurn(c, id, 4, "w2");
  EXPECT_EQ(HeldEpoch(c, "w1", id), 0u) << "the source kept its copy after the move";
  if (HasFailure()) std::printf("%s\n", c.Logs().c_str());
}

INSTANTIATE_TEST_SUITE_P(Steps, MigrationCrashTest,
                         ::testing::Values(CrashCase{"send-session:unfinished", "w1", "w1"},
                                           CrashCase{"import:received", "w2", "w1"},
                                           CrashCase{"import:committed", "w2", "w1"},
                                           CrashCase{"migrate:imported", "router", "w1"},
                                           CrashCase{"migrate:switched", "router", "w2"}),
                         [](const ::testing::TestParamInfo<CrashCase>& info) {
                           std::string name;
                           for (const char* p = info.param.point; *p != '\0'; ++p) {
                             if (std::isalnum(static_cast<unsigned char>(*p))) name += *p;
                           }
                           return name;
                         });

}  // namespace
}  // namespace rsd::testing
