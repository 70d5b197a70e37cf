// Multi-process tests on loopback: a real rsd-router and real rsd-worker processes on the default
// model (SmolLM2-135M-Instruct), driven through the router's gRPC services.
//  - 16 concurrent sessions x 5 turns, greedy and seeded sampling: every session's tokens equal
//    the same session run alone by `rsd-run chat` (batching invariance end to end), across two
//    workers, on one worker (where the counters must show >= 8 decode rows per step), and on a
//    worker whose hot pool is so small that sessions spill and come back while others run.
//  - Bad inputs each get a clear status while another session keeps running unchanged.
//  - A client that cancels mid-stream frees its batch slot and its turn rolls back.
#include <atomic>
#include <map>
#include <mutex>
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
  std::vector<std::string> out;
  for (int t = 0; t < kTurns; ++t) out.push_back(ScriptMessage(s, t));
  return out;
}

// Session s: greedy when even, seeded sampling when odd; max tokens vary so turns end apart.
int MaxTokens(int s) { return 6 + s % 5; }
float Temperature(int s) { return s % 2 ? 0.8f : 0.0f; }
int TopK(int s) { return s % 2 ? 40 : 0; }
uint64_t Seed(int s) { return 1000 + static_cast<uint64_t>(s); }

class ClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = new std::string(SmolLM2Path()); }
  // Session s's turns run alone through rsd-run chat (one process, no batching, no network),
  // computed on first use.
  static const std::vector<std::vector<int32_t>>& Reference(int s) {
    static std::mutex mu;
    std::lock_guard<std::mutex> lock(mu);
    if (reference_ == nullptr) reference_ = new std::map<int, std::vector<std::vector<int32_t>>>();
    auto it = reference_->find(s);
    if (it == reference_->end()) {
      auto r = RsdRunChat(*model_, Script(s), MaxTokens(s), Temperature(s), TopK(s), Seed(s));
      EXPECT_TRUE(r.ok()) << r.status();
      it = reference_->emplace(s, r.ok() ? *r : std::vector<std::vector<int32_t>>(kTurns)).first;
    }
    return it->second;
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
    for (int s = 0; s < kSessions; ++s) Reference(s);  // before the clock-sensitive part
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
          EXPECT_EQ(o.tokens, Reference(s)[t]) << "session " << s << " turn " << t
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
  static std::map<int, std::vector<std::vector<int32_t>>>* reference_;
};

std::string* ClusterTest::model_ = nullptr;
std::map<int, std::vector<std::vector<int32_t>>>* ClusterTest::reference_ = nullptr;

double MeanDecodeRows(const v1::WorkerStatus& st) {
  const auto& c = st.counters();
  return c.decode_steps() ? static_cast<double>(c.decode_rows()) / c.decode_steps() : 0;
}

TEST_F(ClusterTest, SixteenSessionsEqualRsdRunChatAlone) {
  // w1, w2: the default hot pool; w3: a pool of 24 blocks (16 tokens of F16 K/V each), far less
  // than 16 sessions' histories, so it spills idle sessions and restores them while others run.
  auto cluster =
      Cluster::Start(*model_, {{"w1", {}}, {"w2", {}}, {"w3", {"--hot-bytes", "8847360"}}});
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

v1::TurnRequest Turn(const std::string& session, const std::string& message, int max_tokens) {
  v1::TurnRequest req;
  req.set_session_id(session);
  req.set_message(message);
  req.set_max_tokens(max_tokens);
  return req;
}

v1::SessionInfo Describe(Cluster& c, const std::string& session) {
  grpc::ClientContext ctx;
  v1::SessionRequest req;
  req.set_session_id(session);
  v1::SessionInfo info;
  grpc::Status st = c.client().GetSession(&ctx, req, &info);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return info;
}

void Undo(Cluster& c, const std::string& session) {
  grpc::ClientContext ctx;
  v1::SessionRequest req;
  req.set_session_id(session);
  v1::SessionInfo info;
  grpc::Status st = c.client().UndoTurn(&ctx, req, &info);
  EXPECT_TRUE(st.ok()) << st.error_message();
}

#define EXPECT_RPC(outcome, code, text)                                            \
  do {                                                                             \
    const grpc::Status _st = (outcome).status;                                     \
    EXPECT_EQ(_st.error_code(), grpc::StatusCode::code) << _st.error_message();    \
    EXPECT_THAT(_st.error_message(), HasSubstr(text));                             \
  } while (0)

TEST_F(ClusterTest, BadInputsGetClearStatusesWhileAnotherSessionRuns) {
  constexpr int kContext = 256;
  Reference(0);  // computed before the clock-sensitive part
  auto cluster = Cluster::Start(
      *model_, {{"w1", {"--max-context", std::to_string(kContext), "--max-queue", "4",
                        "--max-running", "2", "--max-message-bytes", "4096"}}});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  Cluster& c = **cluster;

  // A bystander: session 0's script, run to the end meanwhile (retrying a turn the full queue
  // refuses, with the same turn id), must equal rsd-run chat alone.
  auto bystander = c.Create();
  ASSERT_TRUE(bystander.ok()) << bystander.status();
  std::atomic<int> bystander_refusals{0};
  std::thread by([&] {
    const std::vector<std::string> script = Script(0);
    for (int t = 0; t < kTurns; ++t) {
      v1::TurnRequest req = Turn(bystander->session_id(), script[t], MaxTokens(0));
      req.set_turn_id(absl::StrCat("by", t));
      req.mutable_sampling()->set_seed(Seed(0) + t);
      ChatOutcome o;
      for (int attempt = 0; attempt < 600; ++attempt) {
        o = Chat(c.client(), req);
        if (o.status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
        bystander_refusals++;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      EXPECT_TRUE(o.status.ok()) << o.status.error_message();
      EXPECT_EQ(o.tokens, Reference(0)[t]) << "bystander turn " << t;
    }
  });

  auto s = c.Create();
  ASSERT_TRUE(s.ok());
  const std::string id = s->session_id();

  EXPECT_RPC(Chat(c.client(), Turn("0123456789abcdef0123456789abcdef", "hi", 4)), NOT_FOUND,
             "unknown session");
  EXPECT_RPC(Chat(c.client(), Turn("not-a-session", "hi", 4)), INVALID_ARGUMENT, "not-a-session");
  EXPECT_RPC(Chat(c.client(), Turn(id, "", 4)), INVALID_ARGUMENT, "empty");
  EXPECT_RPC(Chat(c.client(), Turn(id, "bad \xff\xfe bytes", 4)), INVALID_ARGUMENT, "UTF-8");
  EXPECT_RPC(Chat(c.client(), Turn(id, std::string(5000, 'a'), 4)), INVALID_ARGUMENT, "4096");
  EXPECT_RPC(Chat(c.client(), Turn(id, std::string(6 << 20, 'a'), 4)), RESOURCE_EXHAUSTED, "");
  EXPECT_RPC(Chat(c.client(), Turn(id, "hi", 1000000000)), INVALID_ARGUMENT, "max_tokens");
  EXPECT_RPC(Chat(c.client(), Turn(id, "hi", -1)), INVALID_ARGUMENT, "max_tokens");
  for (int k = 0; k < 5; ++k) {
    v1::TurnRequest req = Turn(id, "hi", 4);
    if (k == 0) req.mutable_sampling()->set_temperature(-1);
    if (k == 1) req.mutable_sampling()->set_temperature(std::nanf(""));
    if (k == 2) req.mutable_sampling()->set_top_p(0);
    if (k == 3) req.mutable_sampling()->set_top_p(1.5f);
    if (k == 4) req.mutable_sampling()->set_top_k(-3);
    EXPECT_RPC(Chat(c.client(), req), INVALID_ARGUMENT, k < 2 ? "temperature" : k < 4 ? "top_p" : "top_k");
  }
  {
    auto unknown = c.Create("no-such-model");
    EXPECT_FALSE(unknown.ok());
    EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("no-such-model"));
  }
  EXPECT_EQ(Describe(c, id).token_count(), 0) << "a refused request changed the session";

  // History + prompt + max tokens at 0.99x and 1.00x of the context are accepted, 1.01x refused.
  ChatOutcome first = Chat(c.client(), Turn(id, "hi", 0));  // max_tokens 0: append only
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  EXPECT_TRUE(first.tokens.empty());
  const int64_t history = first.done.usage().history_tokens();
  EXPECT_EQ(Describe(c, id).token_count(), history);
  ChatOutcome probe = Chat(c.client(), Turn(id, "Tell me more.", 0));
  ASSERT_TRUE(probe.status.ok());
  const int64_t prompt = probe.done.usage().prompt_tokens();
  Undo(c, id);
  ASSERT_EQ(Describe(c, id).token_count(), history);
  for (double f : {1.01, 0.99, 1.00}) {
    const int64_t total = f > 1 ? static_cast<int64_t>(std::ceil(f * kContext))
                                : static_cast<int64_t>(std::floor(f * kContext));
    const int max_tokens = static_cast<int>(total - history - prompt);
    ChatOutcome o = Chat(c.client(), Turn(id, "Tell me more.", max_tokens));
    if (f > 1) {
      EXPECT_RPC(o, INVALID_ARGUMENT, absl::StrCat("= ", total, " tokens exceeds the context length ",
                                                   kContext));
    } else {
      EXPECT_TRUE(o.status.ok()) << f << ": " << o.status.error_message();
      Undo(c, id);
    }
  }

  // A retried turn id: the same answer, nothing appended twice.
  v1::TurnRequest once = Turn(id, "Name a color.", 5);
  once.set_turn_id("retry-me");
  once.mutable_sampling()->set_seed(5);
  once.mutable_sampling()->set_temperature(0.7f);
  ChatOutcome a = Chat(c.client(), once);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  const int64_t after_once = Describe(c, id).token_count();
  ChatOutcome b = Chat(c.client(), once);
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_TRUE(b.done.replayed());
  EXPECT_EQ(Describe(c, id).token_count(), after_once);
  EXPECT_EQ(Describe(c, id).turns(), 2u);

  // A flood beyond the queue bound: refused at once, memory flat.
  std::vector<std::string> flood_ids;
  for (int i = 0; i < 24; ++i) flood_ids.push_back(c.Create()->session_id());
  const int64_t rss_before = c.worker_process("w1").RssBytes();
  std::atomic<int> refused{0}, served{0};
  std::atomic<int64_t> slowest_refusal_ms{0};
  std::vector<std::thread> flood;
  for (const std::string& fid : flood_ids) {
    flood.emplace_back([&, fid] {
      const auto t0 = std::chrono::steady_clock::now();
      ChatOutcome o = Chat(c.client(), Turn(fid, "Tell me a long story.", 24));
      const int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now() - t0).count();
      if (o.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        EXPECT_THAT(o.status.error_message(), HasSubstr("queue is full"));
        refused++;
        int64_t prev = slowest_refusal_ms.load();
        while (ms > prev && !slowest_refusal_ms.compare_exchange_weak(prev, ms)) {
        }
      } else {
        EXPECT_TRUE(o.status.ok()) << o.status.error_message();
        served++;
      }
    });
  }
  for (auto& t : flood) t.join();
  const int64_t rss_after = c.worker_process("w1").RssBytes();
  std::printf("flood: %d refused (slowest refusal %lld ms), %d served; worker RSS %.1f -> %.1f MB\n",
              refused.load(), static_cast<long long>(slowest_refusal_ms.load()), served.load(),
              rss_before / 1e6, rss_after / 1e6);
  EXPECT_GE(refused.load(), 10);
  EXPECT_LT(slowest_refusal_ms.load(), 1000);
  if (kRssIsOurs) {
    EXPECT_LT(rss_after - rss_before, 64ll << 20) << "memory grew under the flood";
  }
  by.join();
  std::printf("bystander: %d refusals retried\n", bystander_refusals.load());
  if (HasFailure()) std::printf("%s\n", c.Logs().c_str());
}

TEST_F(ClusterTest, CancelledStreamFreesItsSlotAndRollsBack) {
  auto cluster = Cluster::Start(*model_, {{"w1", {}}});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  Cluster& c = **cluster;
  auto s = c.Create();
  ASSERT_TRUE(s.ok());
  {
    grpc::ClientContext ctx;
    v1::TurnRequest req = Turn(s->session_id(), Script(0)[0], 200);
    auto reader = c.client().Chat(&ctx, req);
    v1::ChatEvent ev;
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&ev));
    auto at_cancel = c.WorkerStatus("w1");
    ASSERT_TRUE(at_cancel.ok());
    EXPECT_EQ(at_cancel->load().running(), 1);
    ctx.TryCancel();
    const auto t0 = std::chrono::steady_clock::now();
    int64_t steps_after = -1;
    for (int i = 0; i < 500; ++i) {
      auto st = c.WorkerStatus("w1");
      ASSERT_TRUE(st.ok());
      if (st->load().running() == 0 && st->counters().turns_cancelled() == 1) {
        steps_after = st->counters().steps() - at_cancel->counters().steps();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    auto freed = c.WorkerStatus("w1");
    ASSERT_TRUE(freed.ok());
    std::printf("cancel: slot freed %.0f ms after the client cancelled (%lld steps after the "
                "status read before it; %lld after the cancel reached the scheduler)\n", ms,
                static_cast<long long>(steps_after),
                static_cast<long long>(freed->counters().max_cancel_steps()));
    ASSERT_GE(steps_after, 0) << "the cancelled turn kept its batch slot";
    EXPECT_LE(freed->counters().max_cancel_steps(), 1);
    reader->Finish();
  }
  EXPECT_EQ(Describe(c, s->session_id()).token_count(), 0) << "the cancelled turn was not rolled back";
  EXPECT_EQ(Describe(c, s->session_id()).turns(), 0u);
  // The session continues exactly as if the cancelled turn never happened.
  const std::vector<std::string> script = Script(0);
  for (int t = 0; t < 2; ++t) {
    v1::TurnRequest req = Turn(s->session_id(), script[t], MaxTokens(0));
    req.mutable_sampling()->set_seed(Seed(0) + t);
    ChatOutcome o = Chat(c.client(), req);
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    EXPECT_EQ(o.tokens, Reference(0)[t]);
  }
}

}  // namespace
}  // namespace rsd::testing
