// The power fails at every point of a worker's writes in turn (DropUnsyncedFs::FailFrom: before
// the 1st, 2nd, ... mutation of the disk, RocksDB's WAL and directory syncs included) while it
// runs a script of turn commits, a spill to the cold tier, an import, an undo and a close. First
// turns share their common leading chunks (prefix reuse down to one chunk), and the close keeps the
// closed session's prefix as a donor (issue #15). After the restart: no acknowledged turn is lost,
// an acknowledged close stays closed (its kept prefix's checkpoints swept, not back as a session),
// an import is there whole or not at all, each session holds a prefix of whole turns of its
// undisturbed run (turns that were durable but not acknowledged may be there), and every session
// that is there continues exactly as the undisturbed run (which shared nothing), token for token.
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/testing/drop_unsynced_fs.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "tests/support/test_worker.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/session_manager.h"

namespace rsd {
namespace {

const std::vector<std::string> kMessages = {"hi", "a cat story", "and then?", "why", "more", "bye"};
constexpr int kSessions = 4;  // A, B, C (imported), D (closed)
constexpr int kTurns = 4;     // the reference runs this many turns of each session

// Session `s`'s turn `t` (0-based): its own message and, on odd turns, seeded sampling.
std::string Message(int s, int t) { return kMessages[(s + t) % kMessages.size()]; }
GenerateParams Params(int s, int t) {
  GenerateParams p;
  p.max_tokens = 6;
  if (t % 2 == 1) {
    p.sampling.temperature = 0.8f;
    p.sampling.top_k = 30;
    p.sampling.seed = 1000 + 10 * s + t;
  }
  return p;
}

// The undisturbed run of one session: the log after each number of turns, each turn's tokens.
struct Reference {
  std::vector<std::vector<int32_t>> log_after;  // [0] empty
  std::vector<std::vector<int32_t>> generated;
};

// What may be found of a session after the crash: between what was acknowledged and what was
// attempted.
struct Expect {
  SessionId id;
  bool may_exist = false, must_exist = false;
  int lo = 0, hi = 0;  // committed turns
};

class CrashPoints : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* entry = testing::FindSyntheticModel("gqa");
    ASSERT_NE(entry, nullptr);
    model_ = testing::MakeTempDir("rsd-crash-model") + "/gqa.gguf";
    ASSERT_TRUE(testing::SyntheticModel(entry->options).WriteGguf(model_).ok());
    engine_.model_path = model_;
    engine_.block_tokens = 4;
    engine_.keep_residuals = true;
    engine_.spill_form = "residual";
    testing::TestWorker ref(engine_, {});
    ASSERT_TRUE(ref.Start().ok());
    for (int s = 0; s < kSessions; ++s) {
      const SessionId id = SessionId::Random();
      ASSERT_TRUE(ref.sessions().Create(id, {}).ok());
      Reference r;
      r.log_after.emplace_back();
      for (int t = 0; t < kTurns; ++t) {
        absl::StatusOr<TurnResult> out = ref.Chat(id, Message(s, t), Params(s, t));
        ASSERT_TRUE(out.ok()) << out.status();
        r.generated.push_back(out->generation.tokens);
        r.log_after.push_back(r.log_after.back());
        r.log_after.back().insert(r.log_after.back().end(), out->turn_tokens.begin(),
                                  out->turn_tokens.end());
      }
      refs_.push_back(std::move(r));
    }
  }

  // Session C as another worker exports it after two turns (epoch 2: it moves here).
  SessionState ExportedC(const SessionId& id) {
    testing::TestWorker source(engine_, {});
    EXPECT_TRUE(source.Start().ok());
    SessionAttrs attrs;
    attrs.epoch = 1;
    EXPECT_TRUE(source.sessions().Create(id, attrs).ok());
    for (int t = 0; t < 2; ++t) EXPECT_TRUE(source.Chat(id, Message(2, t), Params(2, t)).ok());
    absl::StatusOr<SessionState> state = source.sessions().ExportState(id, SpillForm::kKv);
    EXPECT_TRUE(state.ok()) << state.status();
    SessionState moved = *state;
    moved.attrs.epoch = 2;
    return moved;
  }

  // One run: the power fails before mutation `point` (0: never; it fails after the script).
  // Returns the index of the step the power failed in (steps.size(): none), and checks what
  // the restarted worker holds.
  size_t RunAndCheck(int64_t point, const SessionState& c_state, int64_t* mutations);
  // What the restarted worker holds of one session, against `e` and the reference.
  void CheckSession(testing::TestWorker& w, int s, const Expect& e);

  std::string model_;
  EngineOptions engine_;
  std::vector<Reference> refs_;
  std::map<std::string, int> found_;  // counters printed at the end
};

struct Step {
  const char* name;
  std::function<absl::Status()> run;
  std::function<void(bool ok)> after;  // updates the expectations (before: `run` is attempted)
};

size_t CrashPoints::RunAndCheck(int64_t point, const SessionState& c_state, int64_t* mutations) {
  auto fs = std::make_shared<DropUnsyncedFs>();
  SessionManagerOptions so;
  so.data_dir = testing::MakeTempDir("rsd-crash-points");
  so.cold.file_system = fs;
  so.prefix_reuse_min_tokens = 4;  // one chunk: the sessions' first turns share their opening
  testing::TestWorker w(engine_, so);
  std::vector<Expect> ex(kSessions);
  for (int s = 0; s < kSessions; ++s) ex[s].id = s == 2 ? c_state.id : SessionId::Random();
  auto turn = [&](int s) {
    return [&, s]() {
      ex[s].hi = ex[s].lo + 1;
      absl::StatusOr<TurnResult> r = w.Chat(ex[s].id, Message(s, ex[s].lo), Params(s, ex[s].lo));
      if (r.ok() && r->reused_tokens > 0 && point == 0) ++found_["first turns that shared blocks"];
      return r.status();
    };
  };
  auto turned = [&](int s) {
    return [&, s](bool ok) {
      if (ok) ex[s].lo = ex[s].hi, ex[s].must_exist = true;
    };
  };
  auto create = [&](int s) {
    return [&, s]() {
      ex[s].may_exist = true;
      SessionAttrs attrs;
      attrs.epoch = 1;
      return w.sessions().Create(ex[s].id, attrs);
    };
  };
  auto none = [](bool) {};
  const std::vector<Step> steps = {
      {"create A", create(0), none},
      {"A turn 1", turn(0), turned(0)},
      {"A turn 2", turn(0), turned(0)},
      {"spill A to cold",
       [&] {
         absl::Status st = w.sessions().Spill(ex[0].id, SpillForm::kResidual);
         return st.ok() ? w.sessions().DemoteToCold(ex[0].id) : st;
       },
       none},
      {"create B", create(1), none},
      {"B turn 1", turn(1), turned(1)},
      {"import C",
       [&] {
         ex[2].may_exist = true;
         ex[2].lo = ex[2].hi = 2;
         return w.sessions().ImportState(c_state).status();
       },
       [&](bool ok) { ex[2].must_exist = ok; }},
      {"A turn 3 (from cold)", turn(0), turned(0)},
      {"B turn 2", turn(1), turned(1)},
      {"B undo",
       [&] {
         ex[1].lo = ex[1].hi - 1;
         return w.sessions().Undo(ex[1].id);
       },
       [&](bool ok) {
         if (ok) ex[1].hi = ex[1].lo;
       }},
      {"create D", create(3), none},
      {"D turn 1", turn(3), turned(3)},
      {"close D (its checkpoints in cold, its prefix kept)",
       [&] {
         ex[3].must_exist = false;  // gone, or there whole
         absl::Status st = w.sessions().DemoteToCold(ex[3].id);
         return st.ok() ? w.sessions().Close(ex[3].id, /*keep_prefix=*/true) : st;
       },
       [&](bool ok) { ex[3].may_exist = !ok; }},
      {"C turn 3", turn(2), turned(2)},
  };
  fs->FailFrom(point);
  size_t failed = steps.size();
  if (w.Start().ok()) {
    for (size_t i = 0; i < steps.size() && failed == steps.size(); ++i) {
      const absl::Status st = steps[i].run();
      steps[i].after(st.ok());
      if (!st.ok()) failed = i;
    }
  } else {
    failed = 0;
  }
  *mutations = fs->mutations();
  EXPECT_EQ(point == 0 || point > *mutations, failed == steps.size())
      << "crash point " << point << " of " << *mutations;
  w.Stop();  // the process dies (after the power loss its writes fail)
  absl::StatusOr<DropUnsyncedFs::DropStats> dropped = fs->DropUnsyncedData();
  EXPECT_TRUE(dropped.ok()) << dropped.status();
  fs->Reactivate();
  const absl::Status restarted = w.Start();
  EXPECT_TRUE(restarted.ok()) << "crash point " << point << " in '"
                              << (failed < steps.size() ? steps[failed].name : "none")
                              << "': " << restarted;
  if (!restarted.ok()) return failed;
  found_["restarts that swept a kept prefix's checkpoints"] += w.sessions().orphans_swept() > 0;
  for (int s = 0; s < kSessions; ++s) {
    SCOPED_TRACE(::testing::Message()
                 << "crash point " << point << " in '"
                 << (failed < steps.size() ? steps[failed].name : "none") << "', session "
                 << "ABCD"[s]);
    CheckSession(w, s, ex[s]);
  }
  w.Stop();
  return failed;
}

void CrashPoints::CheckSession(testing::TestWorker& w, int s, const Expect& e) {
  const bool there = w.sessions().Contains(e.id);
  EXPECT_TRUE(there || !e.must_exist) << "an acknowledged session is lost";
  EXPECT_TRUE(!there || e.may_exist) << "a session that was never made or was closed is back";
  if (!there) return;
  absl::StatusOr<SessionInfo> info = w.sessions().Describe(e.id);
  ASSERT_TRUE(info.ok()) << info.status();
  const int turns = static_cast<int>(info->turns);
  EXPECT_GE(turns, e.lo) << "an acknowledged turn is lost";
  EXPECT_LE(turns, e.hi) << "a turn that was never run is there";
  if (turns < e.lo || turns > e.hi) return;
  if (turns > e.lo) ++found_["durable turns not acknowledged"];
  absl::StatusOr<SessionState> log = w.sessions().ExportState(e.id, SpillForm::kTokens);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->tokens, refs_[s].log_after[turns]) << "the token log is not whole turns";
  ASSERT_LT(turns, kTurns);
  absl::StatusOr<TurnResult> next = w.Chat(e.id, Message(s, turns), Params(s, turns));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->generation.tokens, refs_[s].generated[turns]) << "does not continue exactly";
  ++found_["sessions continued exactly"];
}

TEST_F(CrashPoints, NoAcknowledgedTurnIsLostAndEverySessionContinuesExactly) {
  const SessionState c_state = ExportedC(SessionId::Random());
  int64_t total = 0;
  ASSERT_EQ(RunAndCheck(0, c_state, &total), 14u);  // the whole script, power lost at its end
  ASSERT_GT(total, 20);
  EXPECT_GE(found_["first turns that shared blocks"], 1);  // D's, from B
  // Every point by default; RSD_CRASH_STRIDE=k tries every k-th.
  const char* stride_env = std::getenv("RSD_CRASH_STRIDE");
  const int64_t stride = stride_env != nullptr ? std::max(1, std::atoi(stride_env)) : 1;
  std::map<size_t, int> per_step;
  for (int64_t point = 1; point <= total + 1; point += stride) {
    int64_t mutations = 0;
    ++per_step[RunAndCheck(point, c_state, &mutations)];
    if (::testing::Test::HasFailure()) break;  // the first point that fails says enough
  }
  std::printf("%lld mutations in the script; power failed before each of them in turn:\n",
              static_cast<long long>(total));
  for (const auto& [step, n] : per_step) std::printf("  step %zu: %d crash points\n", step, n);
  for (const auto& [what, n] : found_) std::printf("  %s: %d\n", what.c_str(), n);
  EXPECT_GT(per_step.size(), 10u) << "the crash points reach most steps of the script";
  EXPECT_GT(found_["restarts that swept a kept prefix's checkpoints"], 0);
}

// The window the crash points find (a turn durable on the worker whose reply never reached the
// router): the router retries the turn with the journal's turn count, and the worker drops the
// turn it holds beyond it, so the retry replaces it (same seed, same tokens) instead of following
// it; a worker behind the journal refuses rather than run on a shorter history.
TEST_F(CrashPoints, ATurnTheRouterNeverCommittedIsReplacedByItsRetry) {
  testing::TestWorker w(engine_, {});
  ASSERT_TRUE(w.Start().ok());
  const SessionId id = SessionId::Random();
  ASSERT_TRUE(w.sessions().Create(id, {}).ok());
  for (int t = 0; t < 3; ++t) {  // turn 3 is durable, but the router never heard of it
    absl::StatusOr<TurnResult> r = w.Chat(id, Message(0, t), Params(0, t));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->generation.tokens, refs_[0].generated[t]);
  }
  auto retry = [&](uint32_t journal_turns) {
    TurnSpec spec;
    spec.id = id;
    spec.committed_turns = journal_turns;
    spec.input.user_text = Message(0, 2);
    spec.params = Params(0, 2);
    return w.scheduler().RunTurn(spec);
  };
  absl::StatusOr<TurnResult> again = retry(2);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->turn, 3u);
  EXPECT_EQ(again->generation.tokens, refs_[0].generated[2]);
  EXPECT_EQ(w.scheduler().stats().dropped_turns, 1);
  absl::StatusOr<SessionState> log = w.sessions().ExportState(id, SpillForm::kTokens);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->tokens, refs_[0].log_after[3]);
  // The journal ahead of the worker: refused, nothing run, nothing dropped.
  absl::StatusOr<TurnResult> behind = retry(5);
  EXPECT_EQ(behind.status().code(), absl::StatusCode::kDataLoss) << behind.status();
  EXPECT_NE(behind.status().message().find("behind the journal"), std::string::npos);
  EXPECT_EQ(w.sessions().Describe(id)->turns, 3u);
  EXPECT_EQ(w.scheduler().stats().dropped_turns, 1);
}

}  // namespace
}  // namespace rsd
