// The continuous-batching scheduler: many sessions' turns batched together produce exactly the
// tokens and logits each session produces alone (also when the pool is so small that idle
// sessions spill and come back mid-run), the batch really holds many decode rows, a cancelled
// turn leaves at the next step and rolls back, a full queue refuses at once, and a client that
// reads slowly pauses its own session only.
#include "worker/engine/scheduler.h"

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/common/status.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "tests/support/test_worker.h"
#include "worker/engine/turn_decoder.h"
#include "worker/model/unicode.h"

namespace rsd {
namespace {

constexpr int kSessions = 12;
constexpr int kTurns = 4;

std::string Message(int session, int turn) {
  static const char* kWords[] = {"hi", "a cat story", "and then?", "why", "more", "ok", "bye"};
  return std::string(kWords[(session + turn) % 7]) + (session % 3 == 0 ? " please" : "");
}

GenerateParams Params(int session, int turn) {
  GenerateParams p;
  p.max_tokens = 6 + (session * 3 + turn) % 9;
  p.record_logit_hashes = true;
  p.stop_at_eos = false;
  if ((session + turn) % 2 == 1) {
    p.sampling.temperature = 0.9f;
    p.sampling.top_k = 40;
    p.sampling.seed = 77 + static_cast<uint64_t>(session * 100 + turn);
  }
  return p;
}

struct Outcome {
  absl::Status status;
  std::vector<int32_t> tokens;
  std::vector<uint64_t> hashes;
  std::string text;
};

// Reads a turn's stream to its end, checking offsets and text as it goes. `already` is a delta
// the caller read itself before handing the stream over (offsets continue after it).
Outcome Drain(TurnStream& stream, const TurnEvent* already = nullptr) {
  Outcome o;
  std::string streamed;
  std::vector<int32_t> streamed_tokens;
  if (already != nullptr) {
    EXPECT_EQ(already->offset, 0);
    streamed_tokens = already->tokens;
    streamed = already->text;
  }
  for (;;) {
    TurnEvent ev;
    if (!stream.Next(&ev, 60)) {
      o.status = absl::DeadlineExceededError("no event in 60 s");
      return o;
    }
    if (ev.kind == TurnEvent::Kind::kDelta) {
      EXPECT_EQ(ev.offset, static_cast<int64_t>(streamed_tokens.size()));
      EXPECT_EQ(ev.text_offset, static_cast<int64_t>(streamed.size()));
      EXPECT_TRUE(IsValidUtf8(ev.text)) << "a delta splits a character";
      streamed_tokens.insert(streamed_tokens.end(), ev.tokens.begin(), ev.tokens.end());
      streamed += ev.text;
      continue;
    }
    if (ev.kind == TurnEvent::Kind::kError) {
      o.status = ev.status;
      return o;
    }
    o.tokens = ev.result.generation.tokens;
    o.hashes = ev.result.generation.logit_hashes;
    o.text = streamed;
    EXPECT_EQ(streamed_tokens, o.tokens);
    return o;
  }
}

// Holds the scheduler's compute thread inside a task from construction until Release() (or
// destruction): what a test submits meanwhile is queued, not yet admitted.
class ComputeHold {
 public:
  explicit ComputeHold(Scheduler& scheduler)
      : released_(release_.get_future().share()), thread_([this, &scheduler] {
          scheduler.RunSync([this] {
            entered_.set_value();
            released_.wait_for(std::chrono::seconds(30));
          });
        }) {
    entered_.get_future().wait();
  }
  ~ComputeHold() { Release(); }
  void Release() {
    if (!thread_.joinable()) return;
    release_.set_value();
    thread_.join();
  }

 private:
  std::promise<void> entered_, release_;
  std::shared_future<void> released_;
  std::thread thread_;
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* entry = testing::FindSyntheticModel("gqa");
    ASSERT_NE(entry, nullptr);
    testing::SyntheticModel model(entry->options);
    model_ = testing::MakeTempDir("rsd-sched") + "/gqa.gguf";
    ASSERT_TRUE(model.WriteGguf(model_).ok());
    // Each session alone, one turn after another, on an engine of its own.
    for (int s = 0; s < kSessions; ++s) {
      testing::TestWorker alone(EngineOptionsFor(0), {});
      const absl::Status started = alone.Start();
      ASSERT_TRUE(started.ok()) << started;
      auto id = alone.sessions().OpenOrCreate("alone");
      ASSERT_TRUE(id.ok());
      std::vector<Outcome> turns;
      for (int t = 0; t < kTurns; ++t) {
        auto r = alone.Chat(*id, Message(s, t), Params(s, t));
        ASSERT_TRUE(r.ok()) << r.status();
        turns.push_back(Outcome{absl::OkStatus(), r->generation.tokens, r->generation.logit_hashes,
                                r->generation.text});
      }
      alone_.push_back(turns);
    }
  }

  EngineOptions EngineOptionsFor(size_t pool_bytes) const {
    EngineOptions o;
    o.model_path = model_;
    o.block_tokens = 4;
    o.kv_budget_bytes = pool_bytes;
    o.keep_residuals = true;
    o.poison_freed_blocks = true;
    o.threads = 2;
    return o;
  }

  std::unique_ptr<Engine> MakeEngine(size_t pool_bytes) {
    auto e = Engine::Create(EngineOptionsFor(pool_bytes));
    testing::OkOrFail(e.status(), "Engine::Create");
    return std::move(e).value();
  }

  // All sessions' turn t submitted at once, then turn t+1, ...; every turn must equal alone.
  SchedulerStats RunBatched(size_t pool_bytes, SchedulerOptions so) {
    auto engine = MakeEngine(pool_bytes);
    SessionManagerOptions mo;
    mo.data_dir = testing::MakeTempDir("rsd-sched-data");
    mo.warm_budget_bytes = 64 << 10;  // small: spilled checkpoints overflow to RocksDB too
    auto sessions = SessionManager::Create(engine.get(), mo);
    testing::OkOrFail(sessions.status(), "SessionManager::Create");
    Scheduler scheduler(engine.get(), sessions->get(), so);
    std::vector<SessionId> ids;
    for (int s = 0; s < kSessions; ++s) {
      ids.push_back(SessionId::Random());
      absl::Status created;
      scheduler.RunSync([&] { created = (*sessions)->Create(ids.back(), {}); });
      testing::OkOrFail(created, "SessionManager::Create");
    }
    for (int t = 0; t < kTurns; ++t) {
      std::vector<std::shared_ptr<TurnStream>> streams;
      for (int s = 0; s < kSessions; ++s) {
        auto st = scheduler.Submit(TurnSpec{ids[s], "default", 0, Message(s, t), Params(s, t)});
        EXPECT_TRUE(st.ok()) << st.status();
        streams.push_back(*st);
      }
      for (int s = 0; s < kSessions; ++s) {
        Outcome o = Drain(*streams[s]);
        EXPECT_TRUE(o.status.ok()) << "session " << s << " turn " << t << ": " << o.status;
        EXPECT_EQ(o.tokens, alone_[s][t].tokens) << "session " << s << " turn " << t;
        EXPECT_EQ(o.hashes, alone_[s][t].hashes) << "session " << s << " turn " << t;
        // The stream carries valid UTF-8: the engine's raw bytes with U+FFFD for invalid ones.
        EXPECT_EQ(o.text, Utf8Stream().Finish(alone_[s][t].text));
      }
    }
    return scheduler.stats();
  }

  std::string model_;
  std::vector<std::vector<Outcome>> alone_;
};

TEST_F(SchedulerTest, BatchedTurnsEqualEachSessionAlone) {
  auto probe = MakeEngine(0);
  const size_t block_bytes = probe->pool().block_bytes();
  probe.reset();
  SchedulerStats st = RunBatched(1024 * block_bytes, {});  // room for every session at once
  EXPECT_EQ(st.committed, kSessions * kTurns);
  ASSERT_GT(st.decode_steps, 0);
  const double mean_rows = static_cast<double>(st.decode_rows) / st.decode_steps;
  std::printf("steps %lld, decode steps %lld, mean decode rows %.2f (max %d), spills %lld\n",
              static_cast<long long>(st.steps), static_cast<long long>(st.decode_steps), mean_rows,
              st.max_decode_rows, static_cast<long long>(st.spills));
  EXPECT_GE(mean_rows, 4.0) << "the batch did not hold many sessions at once";
  EXPECT_EQ(st.max_decode_rows, kSessions);
}

// Turns that end in the same step are committed by one synced write (a group commit), and every
// one of them is in the store afterwards: a new manager over the same directory finds them all.
TEST_F(SchedulerTest, TurnsThatEndInOneStepShareOneSyncedWrite) {
  constexpr int kGroup = 4, kRounds = 3;
  auto probe = MakeEngine(0);
  const size_t block_bytes = probe->pool().block_bytes();
  probe.reset();
  auto engine = MakeEngine(1024 * block_bytes);  // room for all four: none waits or spills
  const std::string dir = testing::MakeTempDir("rsd-sched-group");
  std::vector<SessionId> ids;
  {
    SessionManagerOptions mo;
    mo.data_dir = dir;
    auto sessions = SessionManager::Create(engine.get(), mo);
    testing::OkOrFail(sessions.status(), "SessionManager::Create");
    Scheduler scheduler(engine.get(), sessions->get(), {});
    for (int s = 0; s < kGroup; ++s) {
      ids.push_back(SessionId::Random());
      absl::Status created;
      scheduler.RunSync([&] { created = (*sessions)->Create(ids.back(), {}); });
      testing::OkOrFail(created, "SessionManager::Create");
    }
    GenerateParams p;  // greedy, one length for all: same prompt, same steps, same end
    p.max_tokens = 5;
    p.stop_at_eos = false;
    for (int t = 0; t < kRounds; ++t) {
      std::vector<std::shared_ptr<TurnStream>> streams;
      {
        ComputeHold hold(scheduler);  // all four queued before any is admitted
        for (int s = 0; s < kGroup; ++s) {
          auto st = scheduler.Submit(TurnSpec{ids[s], "default", 0, Message(0, t), p});
          ASSERT_TRUE(st.ok()) << st.status();
          streams.push_back(*st);
        }
      }
      for (auto& stream : streams) EXPECT_TRUE(Drain(*stream).status.ok());
    }
    const SchedulerStats st = scheduler.stats();
    EXPECT_EQ(st.committed, kGroup * kRounds);
    EXPECT_EQ(st.commit_groups, kRounds) << "one synced write per round of four turns";
  }
  SessionManagerOptions mo;
  mo.data_dir = dir;
  auto reopened = SessionManager::Create(engine.get(), mo);
  testing::OkOrFail(reopened.status(), "SessionManager::Create (reopen)");
  for (const SessionId& id : ids) {
    absl::StatusOr<SessionInfo> info = (*reopened)->Describe(id);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->turns, static_cast<uint32_t>(kRounds));
  }
}

TEST_F(SchedulerTest, ExactWhenIdleSessionsSpillToMakeRoom) {
  // The default pool: room for one full context (64 blocks of 4 tokens), far less than 12
  // sessions' histories, so sessions spill between their turns and are restored (warm, cold or
  // tokens) while others run.
  SchedulerStats st = RunBatched(0, {});
  EXPECT_EQ(st.committed, kSessions * kTurns);
  EXPECT_GT(st.spills, 0);
  EXPECT_GT(st.restores, 0);
  std::printf("spills %lld, restores %lld\n", static_cast<long long>(st.spills),
              static_cast<long long>(st.restores));
}

TEST_F(SchedulerTest, CancelledTurnLeavesTheBatchAndRollsBack) {
  auto engine = MakeEngine(0);
  auto sessions = SessionManager::Create(engine.get(), {});
  ASSERT_TRUE(sessions.ok());
  SchedulerOptions so;
  so.stream_buffer = 1;  // the unread turn pauses after one token
  Scheduler scheduler(engine.get(), sessions->get(), so);
  const SessionId id = SessionId::Random();
  scheduler.RunSync([&] { ASSERT_TRUE((*sessions)->Create(id, {}).ok()); });
  GenerateParams long_turn = Params(0, 0);
  long_turn.max_tokens = 100;
  auto stream = scheduler.Submit(TurnSpec{id, "default", 0, Message(0, 0), long_turn});
  ASSERT_TRUE(stream.ok());
  TurnEvent ev;
  ASSERT_TRUE((*stream)->Next(&ev, 30));
  EXPECT_EQ(ev.kind, TurnEvent::Kind::kDelta);
  (*stream)->Cancel();
  // A token produced between our read and the cancel may still arrive before the error.
  Outcome o = Drain(**stream, &ev);
  EXPECT_EQ(o.status.code(), absl::StatusCode::kCancelled) << o.status;
  const SchedulerStats st = scheduler.stats();
  EXPECT_EQ(st.cancelled, 1);
  EXPECT_EQ(st.running, 0);
  EXPECT_LE(st.max_cancel_steps, 1) << "the cancelled turn stayed in the batch";
  int64_t tokens = -1;
  scheduler.RunSync([&] { tokens = (*sessions)->Describe(id)->token_count; });
  EXPECT_EQ(tokens, 0) << "the cancelled turn was not rolled back";
  // The session goes on as if the cancelled turn never happened.
  auto again = scheduler.Submit(TurnSpec{id, "default", 0, Message(0, 0), Params(0, 0)});
  ASSERT_TRUE(again.ok());
  Outcome o2 = Drain(**again);
  ASSERT_TRUE(o2.status.ok()) << o2.status;
  EXPECT_EQ(o2.tokens, alone_[0][0].tokens);
  EXPECT_EQ(o2.hashes, alone_[0][0].hashes);
}

TEST_F(SchedulerTest, FullQueueRefusesAtOnceAndSlowClientsPauseOnlyThemselves) {
  auto engine = MakeEngine(0);
  auto sessions = SessionManager::Create(engine.get(), {});
  ASSERT_TRUE(sessions.ok());
  SchedulerOptions so;
  so.max_running = 2;
  so.max_queue = 2;
  so.stream_buffer = 1;
  Scheduler scheduler(engine.get(), sessions->get(), so);
  std::vector<SessionId> ids;
  for (int s = 0; s < 5; ++s) {
    ids.push_back(SessionId::Random());
    scheduler.RunSync([&] { ASSERT_TRUE((*sessions)->Create(ids.back(), {}).ok()); });
  }
  // Session 0's client never reads: it pauses after one token and keeps its slot.
  auto slow = scheduler.Submit(TurnSpec{ids[0], "default", 0, Message(0, 0), Params(0, 0)});
  ASSERT_TRUE(slow.ok());
  // Session 1 runs to the end beside it, equal to alone.
  auto fast = scheduler.Submit(TurnSpec{ids[1], "default", 0, Message(1, 0), Params(1, 0)});
  ASSERT_TRUE(fast.ok());
  Outcome f = Drain(**fast);
  ASSERT_TRUE(f.status.ok()) << f.status;
  EXPECT_EQ(f.tokens, alone_[1][0].tokens);
  EXPECT_GT(scheduler.stats().paused_steps, 0);
  // Occupy both batch slots with paused turns, fill the queue, then one more is refused at once.
  auto paused2 = scheduler.Submit(TurnSpec{ids[2], "default", 0, Message(2, 0), Params(2, 0)});
  ASSERT_TRUE(paused2.ok());
  for (int i = 0; i < 200 && scheduler.stats().running < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(scheduler.stats().running, 2);
  auto q1 = scheduler.Submit(TurnSpec{ids[3], "default", 0, Message(3, 0), Params(3, 0)});
  auto q2 = scheduler.Submit(TurnSpec{ids[4], "default", 0, Message(4, 0), Params(4, 0)});
  ASSERT_TRUE(q1.ok() && q2.ok());
  // "At once" without a clock: the compute thread is held inside a task while we submit, so a
  // refusal that comes back cannot have waited for a step, a slot or the queue to move.
  ComputeHold hold(scheduler);
  auto refusing = std::async(std::launch::async, [&] {
    return scheduler.Submit(TurnSpec{ids[4], "default", 0, "x", Params(4, 1)});
  });
  const bool answered_while_held =
      refusing.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  hold.Release();
  EXPECT_TRUE(answered_while_held) << "Submit waited for the compute thread to refuse";
  auto refused = refusing.get();
  EXPECT_THAT(refused.status(), testing::StatusIs(absl::StatusCode::kResourceExhausted,
                                                  ::testing::HasSubstr("queue is full")));
  EXPECT_EQ(scheduler.stats().refused, 1);
  // Everyone read late still gets exactly their alone tokens.
  for (auto* s : {&*slow, &*paused2, &*q1, &*q2}) {
    Outcome o = Drain(**s);
    EXPECT_TRUE(o.status.ok()) << o.status;
  }
  Outcome o0 =
      Drain(**scheduler.Submit(TurnSpec{ids[0], "default", 0, Message(0, 1), Params(0, 1)}));
  EXPECT_EQ(o0.tokens, alone_[0][1].tokens);
}

// On a device whose memory holds the workspace of a few dozen rows but not of a long prompt, a
// step batching a short turn with a long one runs out of device memory: the scheduler retries the
// batch turn by turn, so only the turn that cannot fit even alone fails (RESOURCE_EXHAUSTED, rolled
// back) and the short one completes exactly (cuda-emu, against the CPU run alone).
TEST_F(SchedulerTest, OutOfDeviceMemoryFailsOnlyTheTurnThatCannotFitAlone) {
  auto make = [&](size_t device_memory) {
    EngineOptions o;
    o.model_path = model_;
    o.block_tokens = 4;
    o.keep_residuals = true;
    o.device = "cuda-emu";
    o.device_memory = device_memory;
    auto e = Engine::Create(o);
    testing::OkOrFail(e.status(), "Engine::Create");
    return std::move(e).value();
  };
  // The device memory after a 48-token prompt: enough for every short turn, not for 200 tokens.
  size_t cap = 0;
  {
    auto probe = make(0);
    const SessionId seq = probe->CreateSequence();
    std::vector<int32_t> prompt(48, 5);
    probe->AppendPending(seq, prompt);
    ASSERT_TRUE(probe->FlushPending(seq).ok());
    cap = probe->backend().device_info().memory_used;
  }
  auto engine = make(cap);
  auto sessions = SessionManager::Create(engine.get(), {});
  ASSERT_TRUE(sessions.ok());
  Scheduler scheduler(engine.get(), sessions->get(), SchedulerOptions{});
  const SessionId small = SessionId::Random(), big = SessionId::Random();
  scheduler.RunSync([&] {
    ASSERT_TRUE((*sessions)->Create(small, {}).ok());
    ASSERT_TRUE((*sessions)->Create(big, {}).ok());
  });
  std::string long_text;
  for (int i = 0; i < 50; ++i) long_text += "cats ";
  // Both turns queued while the compute thread is held, so they are admitted into one step.
  ComputeHold hold(scheduler);
  auto s1 = scheduler.Submit(TurnSpec{small, "default", 0, Message(0, 0), Params(0, 0)});
  auto s2 = scheduler.Submit(TurnSpec{big, "default", 0, long_text, Params(1, 0)});
  hold.Release();
  ASSERT_TRUE(s1.ok() && s2.ok());
  Outcome o1 = Drain(**s1), o2 = Drain(**s2);
  ASSERT_TRUE(o1.status.ok()) << o1.status;
  EXPECT_EQ(o1.tokens, alone_[0][0].tokens);
  EXPECT_EQ(o1.hashes, alone_[0][0].hashes);
  EXPECT_THAT(o2.status, testing::StatusIs(absl::StatusCode::kResourceExhausted,
                                           ::testing::HasSubstr("out of device memory")));
  int turns = -1;
  scheduler.RunSync([&] { turns = static_cast<int>((*sessions)->Describe(big)->turns); });
  EXPECT_EQ(turns, 0) << "the refused turn was rolled back";
  // The worker goes on: the next short turn of the first session is exact too.
  Outcome o3 =
      Drain(**scheduler.Submit(TurnSpec{small, "default", 0, Message(0, 1), Params(0, 1)}));
  ASSERT_TRUE(o3.status.ok()) << o3.status;
  EXPECT_EQ(o3.tokens, alone_[0][1].tokens);
  EXPECT_GE(scheduler.stats().failed, 1);
}

TEST_F(SchedulerTest, AdmissionErrorsAreClearAndTouchNoOtherSession) {
  auto engine = MakeEngine(0);
  auto sessions = SessionManager::Create(engine.get(), {});
  ASSERT_TRUE(sessions.ok());
  Scheduler scheduler(engine.get(), sessions->get(), {});
  const SessionId id = SessionId::Random();
  scheduler.RunSync([&] {
    SessionAttrs a;
    a.tenant = "acme";
    a.epoch = 3;
    ASSERT_TRUE((*sessions)->Create(id, a).ok());
  });
  auto run = [&](TurnSpec spec) { return Drain(**scheduler.Submit(std::move(spec))); };
  EXPECT_THAT(
      run(TurnSpec{SessionId::Random(), "acme", 3, "hi", Params(0, 0)}).status,
      testing::StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("unknown session")));
  EXPECT_THAT(
      run(TurnSpec{id, "other", 3, "hi", Params(0, 0)}).status,
      testing::StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("unknown session")));
  EXPECT_THAT(
      run(TurnSpec{id, "acme", 2, "hi", Params(0, 0)}).status,
      testing::StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::HasSubstr("epoch")));
  GenerateParams huge = Params(0, 0);
  huge.max_tokens = 100000;
  EXPECT_THAT(run(TurnSpec{id, "acme", 3, "hi", huge}).status,
              testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                ::testing::HasSubstr("exceeds the context length")));
  GenerateParams bad = Params(0, 0);
  bad.sampling.top_p = 0;
  EXPECT_THAT(run(TurnSpec{id, "acme", 3, "hi", bad}).status,
              testing::StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("top_p")));
  // max_tokens 0 appends the message and generates nothing; the next turn sees it.
  GenerateParams append = Params(0, 0);
  append.max_tokens = 0;
  Outcome a = run(TurnSpec{id, "acme", 3, "remember this", append});
  ASSERT_TRUE(a.status.ok()) << a.status;
  EXPECT_TRUE(a.tokens.empty());
  Outcome b = run(TurnSpec{id, "acme", 3, "hi", Params(0, 0)});
  ASSERT_TRUE(b.status.ok()) << b.status;
  int turns = 0;
  scheduler.RunSync([&] { turns = static_cast<int>((*sessions)->Describe(id)->turns); });
  EXPECT_EQ(turns, 2);
}

TEST_F(SchedulerTest, ACorruptedCheckpointFailsNoTurnOfTheBatchAndRerunsFromTokens) {
  EngineOptions o;
  o.model_path = model_;
  o.block_tokens = 4;
  o.hot_budget_tokens = 8;
  o.keep_residuals = true;
  o.threads = 2;
  auto engine = Engine::Create(o);
  ASSERT_TRUE(engine.ok());
  SessionManagerOptions mo;
  mo.data_dir = testing::MakeTempDir("rsd-sched-corrupt");
  mo.warm_budget_bytes = 1024;  // within-turn checkpoints all go to RocksDB
  auto sessions = SessionManager::Create(engine->get(), mo);
  ASSERT_TRUE(sessions.ok());
  Scheduler scheduler(engine->get(), sessions->get(), {});
  const SessionId id = SessionId::Random(), other = SessionId::Random();
  scheduler.RunSync([&] {
    ASSERT_TRUE((*sessions)->Create(id, {}).ok());
    ASSERT_TRUE((*sessions)->Create(other, {}).ok());
  });
  for (int t = 0; t < kTurns; ++t) {
    if (t == 2) {
      scheduler.RunSync([&] {
        ColdStore* cold = (*sessions)->cold_for_test();
        std::vector<std::pair<BlockKey, std::string>> blocks;
        ASSERT_TRUE(cold->ForEachBlock(id,
                                       [&](const BlockKey& k, std::string_view v) {
                                         blocks.emplace_back(k, std::string(v));
                                         return absl::OkStatus();
                                       })
                        .ok());
        ASSERT_FALSE(blocks.empty());
        blocks.front().second[blocks.front().second.size() / 2] ^= 0x01;
        ASSERT_TRUE(cold->PutBlock(blocks.front().first, blocks.front().second).ok());
      });
    }
    // Two sessions in one batch (both rerun: which one failed is not known). The corrupted chunk
    // is read by the first step, before any token streams; the suppression of already streamed
    // tokens on a rerun is not reached here. Drain checks offsets anyway.
    auto a = scheduler.Submit(TurnSpec{id, "default", 0, Message(0, t), Params(0, t)});
    auto b = scheduler.Submit(TurnSpec{other, "default", 0, Message(1, t), Params(1, t)});
    ASSERT_TRUE(a.ok() && b.ok());
    Outcome oa = Drain(**a), ob = Drain(**b);
    ASSERT_TRUE(oa.status.ok()) << "turn " << t << ": " << oa.status;
    ASSERT_TRUE(ob.status.ok()) << "turn " << t << ": " << ob.status;
    EXPECT_EQ(oa.tokens, alone_[0][t].tokens) << "turn " << t;
    EXPECT_EQ(oa.hashes, alone_[0][t].hashes) << "turn " << t;
    EXPECT_EQ(ob.tokens, alone_[1][t].tokens) << "turn " << t;
  }
}

TEST_F(SchedulerTest, HealthFollowsProgressNotMerelyTheProcess) {
  auto engine = MakeEngine(0);
  auto sessions = SessionManager::Create(engine.get(), {});
  ASSERT_TRUE(sessions.ok());
  SchedulerOptions so;
  so.stall_seconds = 0.3;
  Scheduler scheduler(engine.get(), sessions->get(), so);
  const SessionId id = SessionId::Random();
  scheduler.RunSync([&] { ASSERT_TRUE((*sessions)->Create(id, {}).ok()); });
  EXPECT_TRUE(scheduler.Healthy()) << "idle is healthy";
  // The compute thread is held up (a stuck step) while a turn waits; it is released once the
  // test has seen the health flip (or after 30 s, so a broken check fails instead of hanging).
  ComputeHold stuck(scheduler);
  auto stream = scheduler.Submit(TurnSpec{id, "default", 0, Message(0, 0), Params(0, 0)});
  ASSERT_TRUE(stream.ok());
  bool went_unhealthy = false;
  for (int i = 0; i < 3000 && !went_unhealthy; ++i) {
    went_unhealthy = !scheduler.Healthy();
    if (!went_unhealthy) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stuck.Release();
  EXPECT_TRUE(went_unhealthy) << "a stalled scheduler with work waiting still reported healthy";
  Outcome o = Drain(**stream);
  ASSERT_TRUE(o.status.ok()) << o.status;
  EXPECT_EQ(o.tokens, alone_[0][0].tokens);
  EXPECT_TRUE(scheduler.Healthy()) << "progress resumed";
}

TEST_F(SchedulerTest, IdleSessionsPastTheirTtlSpillToColdThenGo) {
  auto engine = MakeEngine(0);
  SessionManagerOptions mo;
  mo.data_dir = testing::MakeTempDir("rsd-sched-ttl");
  auto sessions = SessionManager::Create(engine.get(), mo);
  ASSERT_TRUE(sessions.ok());
  SchedulerOptions so;
  so.housekeeping_seconds = 0.1;  // well inside the spilled window [1 s, 2 s)
  Scheduler scheduler(engine.get(), sessions->get(), so);
  const SessionId id = SessionId::Random(), keep = SessionId::Random();
  scheduler.RunSync([&] {
    SessionAttrs a;
    a.ttl_seconds = 1;
    ASSERT_TRUE((*sessions)->Create(id, a).ok());
    ASSERT_TRUE((*sessions)->Create(keep, {}).ok());  // no TTL: stays
  });
  for (const SessionId& s : {id, keep}) {
    Outcome o = Drain(**scheduler.Submit(TurnSpec{s, "default", 0, Message(0, 0), Params(0, 0)}));
    ASSERT_TRUE(o.status.ok()) << o.status;
  }
  auto info = [&](const SessionId& s) {
    absl::StatusOr<SessionInfo> r;
    int64_t cold = 0;
    scheduler.RunSync([&] {
      r = (*sessions)->Describe(s);
      if (r.ok()) cold = *(*sessions)->ColdBytes(s);
    });
    return std::make_pair(r, cold);
  };
  // Spilled once idle past its TTL (1 s), deleted at twice it; polled, so a slow machine only
  // makes the test wait longer.
  absl::StatusOr<SessionInfo> spilled = absl::UnknownError("not polled");
  int64_t cold = 0;
  for (int i = 0; i < 300; ++i) {
    std::tie(spilled, cold) = info(id);
    if (!spilled.ok() || !spilled->resident) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(spilled.ok()) << spilled.status();
  EXPECT_FALSE(spilled->resident) << "idle past its TTL but still hot after 15 s";
  EXPECT_GT(cold, 0) << "the spilled session's checkpoints are not in the cold tier";
  absl::StatusCode gone = absl::StatusCode::kOk;
  for (int i = 0; i < 300 && gone == absl::StatusCode::kOk; ++i) {
    gone = info(id).first.status().code();
    if (gone == absl::StatusCode::kOk) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(gone, absl::StatusCode::kNotFound) << "not deleted at 2x TTL";
  auto kept = info(keep).first;
  ASSERT_TRUE(kept.ok());
  EXPECT_TRUE(kept->resident);
}

TEST_F(SchedulerTest, PinnedAndHighPrioritySessionsAreSpilledLast) {
  testing::TestWorker w(EngineOptionsFor(0), {});
  const absl::Status started = w.Start();
  ASSERT_TRUE(started.ok()) << started;
  SessionManager& m = w.sessions();
  std::vector<SessionId> ids(3);
  SessionAttrs pinned, high, plain;
  pinned.pin = true;
  high.priority = 5;
  const SessionAttrs attrs[3] = {plain, pinned, high};
  for (int i = 0; i < 3; ++i) {
    ids[i] = SessionId::Random();
    ASSERT_TRUE(m.Create(ids[i], attrs[i]).ok());
  }
  // Used in the order plain, pinned, high: plain is the least recently used, yet the order of
  // spilling is by pin, then priority, then recency.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(w.Chat(ids[i], "hi", Params(0, 0)).ok());
  ASSERT_TRUE(*m.SpillIdle({}));
  EXPECT_FALSE(m.Describe(ids[0])->resident);
  EXPECT_TRUE(m.Describe(ids[1])->resident);
  EXPECT_TRUE(m.Describe(ids[2])->resident);
  ASSERT_TRUE(*m.SpillIdle({}));
  EXPECT_FALSE(m.Describe(ids[2])->resident) << "priority 5 goes before the pinned session";
  EXPECT_TRUE(m.Describe(ids[1])->resident);
  ASSERT_TRUE(*m.SpillIdle({}));
  EXPECT_FALSE(m.Describe(ids[1])->resident) << "pinned, spilled when nothing else can make room";
  EXPECT_FALSE(*m.SpillIdle({}));
}

}  // namespace
}  // namespace rsd
