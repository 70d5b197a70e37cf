// Migration, drain and failover through the router's Admin service against fake workers: the
// journal switches owner with epoch + 1 only once the target holds the session; on any failure the
// source keeps serving; turns wait at the session's gate and then run on the new owner; a retried
// turn id reuses the journaled seed; re-registering workers are told what to drop.
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "tests/router/router_test_fixture.h"

namespace rsd::router {
namespace {

using ::rsd::router::testing::FakeWorker;
using ::rsd::router::testing::RouterServiceTest;
using ::testing::HasSubstr;

class MigrationTest : public RouterServiceTest {
 public:
  grpc::Status Migrate(const std::string& session, const std::string& to, v1::MigrateResponse* resp,
                       const std::string& form = "") {
    v1::MigrateRequest req;
    req.set_session_id(session);
    req.set_to_worker(to);
    req.set_form(form);
    return admin_->Migrate(Ctx().get(), req, resp);
  }
  grpc::Status Failover(const std::string& worker, v1::FailoverResponse* resp) {
    v1::WorkerRequest req;
    req.set_worker(worker);
    return admin_->Failover(Ctx().get(), req, resp);
  }
  // Waits (real time) until `pred` holds; false after 5 s.
  template <typename F>
  static bool Eventually(F pred) {
    for (int i = 0; i < 500; ++i) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
  }
};

TEST_F(MigrationTest, MigrateSwitchesOwnerWithNextEpochAndDropsTheSource) {
  FakeWorker& w1 = AddWorker("w1");
  FakeWorker& w2 = AddWorker("w2");
  const std::string s = CreateOn("w1");
  EXPECT_EQ(Journaled(s).model_fingerprint, "fp-smol");
  ASSERT_TRUE(Chat(s, "one").status.ok());
  ASSERT_TRUE(Chat(s, "two").status.ok());

  v1::MigrateResponse m;
  grpc::Status st = Migrate(s, "w2", &m, "kv");
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(m.from_worker(), "w1");
  EXPECT_EQ(m.from_epoch(), 1u);
  EXPECT_EQ(m.session().worker(), "w2");
  EXPECT_EQ(m.session().epoch(), 2u);
  EXPECT_EQ(m.session().turns(), 2u);
  EXPECT_EQ(m.form(), "kv");
  EXPECT_EQ(m.blocks(), 2);
  EXPECT_EQ(m.payload_bytes(), 2000);
  EXPECT_EQ(m.token_bytes(), 800);
  EXPECT_GT(m.wire_bytes(), 2000);  // the blocks and the varint-packed tokens
  ASSERT_EQ(w1.Exports().size(), 1u);
  EXPECT_EQ(w1.Exports()[0].ref().epoch(), 1u);
  EXPECT_EQ(w1.Exports()[0].target_epoch(), 2u);
  EXPECT_EQ(w1.Exports()[0].form(), "kv");
  // The source's copy is dropped with its own (old) epoch.
  ASSERT_EQ(w1.ClosedRefs().size(), 1u);
  EXPECT_EQ(w1.ClosedRefs()[0].epoch(), 1u);
  EXPECT_FALSE(w1.Has(s));
  EXPECT_EQ(w2.Get(s).epoch, 2u);
  EXPECT_EQ(Journaled(s).worker, "w2");
  EXPECT_EQ(Journaled(s).epoch, 2u);

  Turn t = Chat(s, "three");
  ASSERT_TRUE(t.status.ok()) << t.status.error_message();
  EXPECT_EQ(t.events.back().done().worker(), "w2");
  EXPECT_EQ(t.events.back().done().turn(), 3u);
  ASSERT_EQ(w2.Chats().size(), 1u);
  EXPECT_EQ(w2.Chats()[0].ref().epoch(), 2u);

  v1::ListWorkersResponse workers;
  ASSERT_TRUE(admin_->ListWorkers(Ctx().get(), v1::ListWorkersRequest(), &workers).ok());
  EXPECT_EQ(workers.workers(0).sessions(), 0);
  EXPECT_EQ(workers.workers(1).sessions(), 1);
}

TEST_F(MigrationTest, MigrateRefusesBadRequestsWithClearStatuses) {
  AddWorker("w1");
  AddWorker("w2");
  AddWorker("big", "llama", 1000, "fp-llama");
  AddWorker("w3", "smol", 1000, "fp-other");
  const std::string s = CreateOn("w1");
  v1::MigrateResponse m;
  grpc::Status st = Migrate(s, "w2", &m, "zip");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("'zip'"));
  st = Migrate(s, "nope", &m);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(st.error_message(), HasSubstr("unknown worker 'nope'"));
  st = Migrate("0123456789abcdef0123456789abcdef", "w2", &m);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  st = Migrate(s, "w1", &m);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("already there"));
  st = Migrate(s, "big", &m);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("model 'smol', the worker serves 'llama'"));
  st = Migrate(s, "w3", &m);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("'fp-smol', the worker's is 'fp-other'"));
  ASSERT_TRUE(registry_->SetCordoned("w2", true).ok());
  st = Migrate(s, "w2", &m);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("cordoned"));
  EXPECT_EQ(Journaled(s).worker, "w1");
  EXPECT_EQ(Journaled(s).epoch, 1u);
}

TEST_F(MigrationTest, FailedStreamLeavesTheSourceServing) {
  FakeWorker& w1 = AddWorker("w1");
  FakeWorker& w2 = AddWorker("w2");
  const std::string s = CreateOn("w1");
  ASSERT_TRUE(Chat(s, "one").status.ok());
  v1::MigrateResponse m;

  w1.corrupt_export = true;
  grpc::Status st = Migrate(s, "w2", &m);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_THAT(st.error_message(), HasSubstr("migrate session " + s));
  EXPECT_THAT(st.error_message(), HasSubstr("worker 'w2'"));
  w1.corrupt_export = false;

  w1.truncate_export = true;
  st = Migrate(s, "w2", &m);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DATA_LOSS);
  w1.truncate_export = false;

  {
    absl::MutexLock l(&w1.mu_);
    w1.export_fail = absl::FailedPreconditionError("turn running");
  }
  st = Migrate(s, "w2", &m);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("export from worker 'w1': turn running"));
  {
    absl::MutexLock l(&w1.mu_);
    w1.export_fail = absl::OkStatus();
  }

  EXPECT_FALSE(w2.Has(s));
  EXPECT_TRUE(w1.Closed().empty());
  EXPECT_EQ(Journaled(s).worker, "w1");
  EXPECT_EQ(Journaled(s).epoch, 1u);
  Turn t = Chat(s, "two");
  ASSERT_TRUE(t.status.ok()) << t.status.error_message();
  EXPECT_EQ(t.events.back().done().worker(), "w1");
  // And a later migration still works.
  ASSERT_TRUE(Migrate(s, "w2", &m).ok());
  EXPECT_EQ(m.session().epoch(), 2u);
}

TEST_F(MigrationTest, TurnArrivingDuringMigrationWaitsThenRunsOnTheTarget) {
  FakeWorker& w1 = AddWorker("w1");
  FakeWorker& w2 = AddWorker("w2");
  const std::string s = CreateOn("w1");
  ASSERT_TRUE(Chat(s, "one").status.ok());
  w1.export_delay_ms = 400;
  std::atomic<bool> migrated{false};
  std::thread mover([&] {
    v1::MigrateResponse m;
    migrated = Migrate(s, "w2", &m).ok();
  });
  ASSERT_TRUE(Eventually([&] { return core_->gates().Held(*ParseSessionId(s)); }));
  Turn t = Chat(s, "two");
  mover.join();
  EXPECT_TRUE(migrated);
  ASSERT_TRUE(t.status.ok()) << t.status.error_message();
  EXPECT_EQ(t.events.back().done().worker(), "w2");
  EXPECT_EQ(t.events.back().done().turn(), 2u);
  EXPECT_EQ(w1.chat_count(), 1u);
  EXPECT_EQ(w2.chat_count(), 1u);
}

TEST_F(MigrationTest, MigrationWaitsForTheRunningTurn) {
  FakeWorker& w1 = AddWorker("w1");
  AddWorker("w2");
  const std::string s = CreateOn("w1");
  w1.turn_delay_ms = 300;
  Turn t;
  std::thread turn([&] { t = Chat(s, "slow"); });
  ASSERT_TRUE(Eventually([&] { return w1.chat_count() == 1; }));
  v1::MigrateResponse m;
  ASSERT_TRUE(Migrate(s, "w2", &m).ok());
  turn.join();
  ASSERT_TRUE(t.status.ok());
  EXPECT_EQ(t.events.back().done().worker(), "w1");
  EXPECT_EQ(m.session().turns(), 1u);  // the turn was in the exported state
}

TEST_F(MigrationTest, ManualFailoverRebuildsFromTheJournalsTokenLog) {
  FakeWorker& w1 = AddWorker("w1");
  FakeWorker& w2 = AddWorker("w2");
  const std::string s = CreateOn("w1");
  ASSERT_TRUE(Chat(s, "ab").status.ok());
  ASSERT_TRUE(Chat(s, "cd").status.ok());
  const FakeWorker::Session before = w1.Get(s);

  v1::FailoverResponse f;
  grpc::Status st = Failover("w1", &f);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(f.worker().state(), "cordoned");
  ASSERT_EQ(f.moved_size(), 1);
  EXPECT_EQ(f.moved(0).session().worker(), "w2");
  EXPECT_EQ(f.moved(0).session().epoch(), 2u);
  EXPECT_EQ(f.moved(0).form(), "tokens");
  ASSERT_EQ(w2.Imports().size(), 1u);
  ASSERT_EQ(w2.Imports()[0].size(), 2u);  // header and trailer, no blocks
  const v1::StateHeader h = w2.Imports()[0][0].header();
  EXPECT_EQ(h.ref().epoch(), 2u);
  EXPECT_EQ(h.ref().tenant(), "default");
  EXPECT_EQ(h.model_fingerprint(), "fp-smol");
  EXPECT_EQ(h.form(), "tokens");
  EXPECT_EQ(std::vector<int32_t>(h.tokens().begin(), h.tokens().end()), before.log);
  EXPECT_EQ(std::vector<int64_t>(h.turn_ends().begin(), h.turn_ends().end()), before.turn_ends);
  EXPECT_EQ(w2.Get(s).log, before.log);  // the fake checked the digest
  EXPECT_EQ(Journaled(s).worker, "w2");
  Turn t = Chat(s, "ef");
  ASSERT_TRUE(t.status.ok());
  EXPECT_EQ(t.events.back().done().worker(), "w2");
  EXPECT_EQ(t.events.back().done().turn(), 3u);
}

TEST_F(MigrationTest, FailoverWithoutATargetIsUnavailableAndChangesNothing) {
  AddWorker("w1");
  AddWorker("w2", "smol", 1000, "fp-other");
  const std::string s = CreateOn("w1");
  ASSERT_TRUE(Chat(s, "ab").status.ok());
  v1::FailoverResponse f;
  grpc::Status st = Failover("w1", &f);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(st.error_message(), HasSubstr(s));
  EXPECT_THAT(st.error_message(), HasSubstr("model 'smol'"));
  EXPECT_EQ(Journaled(s).worker, "w1");
  EXPECT_EQ(Journaled(s).epoch, 1u);
}

TEST_F(MigrationTest, WorkerDyingMidTurnRetriedTurnIdReusesTheJournaledSeed) {
  FakeWorker& w1 = AddWorker("w1");
  FakeWorker& w2 = AddWorker("w2");
  const std::string s = CreateOn("w1");
  ASSERT_TRUE(Chat(s, "ab").status.ok());
  w1.fail_after_first_delta = true;
  Turn cut = Chat(s, "xyz", "turn-2");
  EXPECT_EQ(cut.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(cut.status.error_message(), HasSubstr("retry the turn id"));
  EXPECT_EQ(journal_->ListTurns(*ParseSessionId(s))->size(), 1u);  // nothing half-committed
  const uint64_t seed = w1.Chats().back().turn().sampling().seed();
  std::optional<PendingRecord> pending = *journal_->GetPending(*ParseSessionId(s));
  ASSERT_TRUE(pending.has_value());
  EXPECT_EQ(pending->turn_id, "turn-2");
  EXPECT_EQ(pending->seed, seed);

  v1::FailoverResponse f;
  ASSERT_TRUE(Failover("w1", &f).ok());
  Turn retry = Chat(s, "xyz", "turn-2");
  ASSERT_TRUE(retry.status.ok()) << retry.status.error_message();
  const v1::TurnDone& done = retry.events.back().done();
  EXPECT_EQ(done.worker(), "w2");
  EXPECT_EQ(done.turn(), 2u);
  EXPECT_EQ(done.seed(), seed);
  ASSERT_EQ(w2.Chats().size(), 1u);
  EXPECT_EQ(w2.Chats()[0].turn().sampling().seed(), seed);
  EXPECT_FALSE(journal_->GetPending(*ParseSessionId(s))->has_value());  // cleared at commit
  // A fresh turn id draws a fresh seed.
  Turn fresh = Chat(s, "q", "turn-3");
  ASSERT_TRUE(fresh.status.ok());
  EXPECT_NE(fresh.events.back().done().seed(), seed);
}

TEST_F(MigrationTest, ATurnCommittedByAWorkerThatDiedBeforeItsReplyIsReplacedByTheRetry) {
  FakeWorker& w1 = AddWorker("w1");
  const std::string s = CreateOn("w1");
  ASSERT_TRUE(Chat(s, "ab").status.ok());
  EXPECT_EQ(w1.Chats().back().committed_turns(), 0u);
  w1.fail_after_commit = true;  // turn 2 is durable on w1; its reply never reaches the router
  Turn cut = Chat(s, "xyz", "turn-2");
  EXPECT_EQ(cut.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(journal_->ListTurns(*ParseSessionId(s))->size(), 1u);
  w1.fail_after_commit = false;
  Turn retry = Chat(s, "xyz", "turn-2");
  ASSERT_TRUE(retry.status.ok()) << retry.status.error_message();
  ASSERT_TRUE(w1.Chats().back().has_committed_turns());
  EXPECT_EQ(w1.Chats().back().committed_turns(), 1u);  // the journal's count, not the worker's
  EXPECT_EQ(w1.dropped_turns, 1);
  EXPECT_EQ(retry.events.back().done().turn(), 2u);  // it replaced the turn, not followed it
  EXPECT_EQ(journal_->ListTurns(*ParseSessionId(s))->size(), 2u);
}

// A worker whose storage lost a committed turn (it holds fewer than the journal) refuses the next
// turn with DATA_LOSS; the router rebuilds the session from its journal (the monitor) and the same
// call then runs the turn on the rebuilt session, as turn 3.
TEST_F(MigrationTest, AWorkerBehindTheJournalOnATurnHasTheSessionRebuiltAndTheTurnRuns) {
  FakeWorker& w1 = AddWorker("w1");
  const std::string s = CreateOn("w1");
  ASSERT_TRUE(Chat(s, "ab").status.ok());
  ASSERT_TRUE(Chat(s, "cd").status.ok());
  v1::SessionRef ref;
  ref.set_session_id(s);
  ref.set_epoch(1);
  v1::SessionInfo undone;
  ASSERT_TRUE(w1.UndoTurn(&ref, &undone).ok());  // the worker's storage loses turn 2
  core_->StartFailoverMonitor();
  const size_t chats_before = w1.chat_count();
  Turn t = Chat(s, "ef", "turn-3");
  ASSERT_TRUE(t.status.ok()) << t.status.error_message();
  EXPECT_EQ(t.events.back().done().turn(), 3u);
  EXPECT_EQ(journal_->ListTurns(*ParseSessionId(s))->size(), 3u);
  EXPECT_GE(w1.chat_count(), chats_before + 2);  // refused, then run on the rebuilt session
  EXPECT_EQ(journal_->GetSession(*ParseSessionId(s))->epoch, 2u);  // rebuilt at epoch + 1
}

TEST_F(MigrationTest, AutomaticFailoverOfADeadWorkerWhileATurnWaits) {
  AddWorker("w1");
  FakeWorker& w2 = AddWorker("w2");
  const std::string s = CreateOn("w1");
  ASSERT_TRUE(Chat(s, "ab").status.ok());
  core_->StartFailoverMonitor();
  clock_.Advance(absl::Seconds(6));  // both miss heartbeats...
  Turn t;
  std::thread turn([&] { t = Chat(s, "cd", "t2"); });
  // The turn found its owner dead and waits (no worker is ready to fail over to yet).
  EXPECT_TRUE(Eventually([&] { return core_->turn_retries() > 0; }));
  EXPECT_TRUE(Heartbeat("w2"));  // ...a dead worker must register again
  Register("w2", workers_["w2"].address, "smol", 1000);
  turn.join();
  ASSERT_TRUE(t.status.ok()) << t.status.error_message();
  EXPECT_EQ(t.events.back().done().worker(), "w2");
  EXPECT_EQ(Journaled(s).worker, "w2");
  EXPECT_EQ(Journaled(s).epoch, 2u);
  EXPECT_EQ(w2.chat_count(), 1u);

  // w1 comes back: it is told to drop the session it lost, and one the journal never knew.
  v1::SessionRef lost;
  lost.set_session_id(s);
  lost.set_tenant("default");
  lost.set_epoch(1);
  v1::SessionRef unknown = lost;
  unknown.set_session_id("0123456789abcdef0123456789abcdef");
  v1::RegisterResponse r =
      Register("w1", workers_["w1"].address, "smol", 1000, "fp-smol", {lost, unknown});
  ASSERT_EQ(r.drop_size(), 2);
  EXPECT_EQ(r.drop(0).session_id(), s);
  EXPECT_EQ(r.drop(1).session_id(), unknown.session_id());
}

TEST_F(MigrationTest, RestartedRouterFailsOverSessionsOfAWorkerThatNeverCameBack) {
  AddWorker("w1");
  FakeWorker& w2 = AddWorker("w2");
  const std::string s = CreateOn("w1");
  ASSERT_TRUE(Chat(s, "ab").status.ok());
  StopRouter();
  StartRouter();
  core_->StartFailoverMonitor();
  Register("w2", workers_["w2"].address, "smol", 1000);  // w1 never registers again
  const int64_t rounds = core_->monitor_rounds();
  ASSERT_TRUE(Eventually([&] { return core_->monitor_rounds() >= rounds + 2; }));
  EXPECT_EQ(Journaled(s).worker, "w1");  // two scans later: not before a heartbeat timeout
  clock_.Advance(absl::Seconds(4));
  EXPECT_FALSE(Heartbeat("w2"));
  clock_.Advance(absl::Seconds(2));
  EXPECT_FALSE(Heartbeat("w2"));
  ASSERT_TRUE(Eventually([&] { return Journaled(s).worker == "w2"; }));
  EXPECT_TRUE(w2.Has(s));
}

TEST_F(MigrationTest, RegisteringOwnerKeepsItsSessionsAndDropsStaleEpochs) {
  AddWorker("w1");
  const std::string s = CreateOn("w1");
  v1::SessionRef ref;
  ref.set_session_id(s);
  ref.set_epoch(1);
  EXPECT_EQ(Register("w1", workers_["w1"].address, "smol", 1000, "fp-smol", {ref}).drop_size(), 0);
  ASSERT_TRUE(journal_->SetOwner(*ParseSessionId(s), "w1", 3, 1).ok());
  EXPECT_EQ(Register("w1", workers_["w1"].address, "smol", 1000, "fp-smol", {ref}).drop_size(), 1);
}

// After a router restart every worker registers again at once, and one registration holds a
// session's gate while it looks at it: another worker's stale copy of that session (older than the
// journal's epoch, or the journal's epoch on another worker) is dropped all the same. A copy newer
// than the journal's (a move's or rebuild's target before the switch) is left while the gate is
// held, and dropped once it is free and the journal never took it.
TEST_F(MigrationTest, AStaleCopyIsDroppedWhileAnotherRegistrationHoldsTheSessionsGate) {
  AddWorker("w1");
  AddWorker("w2");
  const std::string s = CreateOn("w1");
  const SessionId id = *ParseSessionId(s);
  ASSERT_TRUE(journal_->SetOwner(id, "w2", 2, 1).ok());
  v1::SessionRef ref;
  ref.set_session_id(s);
  for (uint64_t stale : {1u, 2u}) {
    absl::StatusOr<SessionGates::Lock> held =
        core_->gates().Acquire(id, "w2's registration", absl::Now() + absl::Seconds(5));
    ASSERT_TRUE(held.ok()) << held.status();
    ref.set_epoch(stale);
    EXPECT_EQ(Register("w1", workers_["w1"].address, "smol", 1000, "fp-smol", {ref}).drop_size(), 1)
        << "a copy at epoch " << stale << " (the journal: w2 at 2) kept";
  }
  ref.set_epoch(3);
  {
    absl::StatusOr<SessionGates::Lock> held =
        core_->gates().Acquire(id, "a move to w1", absl::Now() + absl::Seconds(5));
    ASSERT_TRUE(held.ok()) << held.status();
    EXPECT_EQ(Register("w1", workers_["w1"].address, "smol", 1000, "fp-smol", {ref}).drop_size(),
              0);
  }
  EXPECT_EQ(Register("w1", workers_["w1"].address, "smol", 1000, "fp-smol", {ref}).drop_size(), 1);
}

TEST_F(MigrationTest, DrainMovesEverySessionUnderLoadWithoutFailingATurn) {
  FakeWorker& w1 = AddWorker("w1");
  FakeWorker& w2 = AddWorker("w2");
  FakeWorker& w3 = AddWorker("w3");
  std::vector<std::string> sessions;
  for (int i = 0; i < 4; ++i) sessions.push_back(CreateOn("w1"));
  w2.turn_delay_ms = 5;
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, turns{0};
  std::vector<std::thread> load;
  for (const std::string& s : sessions) {
    load.emplace_back([&, s] {
      while (!stop) {
        Turn t = Chat(s, "hi");
        if (!t.status.ok()) {
          ++failures;
          ADD_FAILURE() << t.status.error_message();
        }
        ++turns;
      }
    });
  }
  // Under load: every session has run turns on w1 before the drain starts, and every one runs
  // more on its new worker after it, while no client ever paused.
  const size_t on_w1 = 2 * sessions.size();
  const bool loaded = Eventually([&] { return w1.chat_count() >= on_w1; });
  v1::WorkerRequest req;
  req.set_worker("w1");
  v1::DrainResponse d;
  const int before_drain = turns;
  grpc::Status st = admin_->Drain(Ctx().get(), req, &d);
  const bool moved_on =
      Eventually([&] { return w2.chat_count() + w3.chat_count() >= 2 * sessions.size(); });
  stop = true;
  for (std::thread& th : load) th.join();
  ASSERT_TRUE(loaded) << "the load never reached w1";
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(failures, 0);
  EXPECT_GE(before_drain, static_cast<int>(sessions.size()));
  EXPECT_EQ(d.worker().state(), "draining");
  EXPECT_EQ(d.moved_size(), 4);
  for (const std::string& s : sessions) EXPECT_NE(Journaled(s).worker, "w1");
  EXPECT_TRUE(moved_on) << "the moved sessions' turns did not reach w2 and w3";
  // Nothing new is placed on a draining worker.
  v1::SessionInfo info;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Create(&info).ok());
    EXPECT_NE(info.worker(), "w1");
  }
}

TEST(TokenStateStreamTest, HeaderTrailerAndDigest) {
  SessionRecord rec;
  rec.id = SessionId::Random();
  rec.tenant = "acme";
  rec.pin = true;
  TurnRecord t1, t2;
  t1.turn = 1;
  t1.log_tokens = {1, 2, 3};
  t1.history_tokens = 3;
  t2.turn = 2;
  t2.log_tokens = {4, 5};
  t2.history_tokens = 5;
  absl::StatusOr<std::vector<v1::StateChunk>> c = TokenStateStream(rec, {t1, t2}, 7, "fp");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->size(), 2u);
  const v1::StateHeader& h = (*c)[0].header();
  EXPECT_EQ(h.version(), 1u);
  EXPECT_EQ(h.ref().epoch(), 7u);
  EXPECT_EQ(h.ref().tenant(), "acme");
  EXPECT_TRUE(h.options().pin());
  EXPECT_EQ(h.tokens_size(), 5);
  EXPECT_EQ(std::vector<int64_t>(h.turn_ends().begin(), h.turn_ends().end()),
            (std::vector<int64_t>{3, 5}));
  StateDigest d;
  d.AddHeader(h);
  EXPECT_EQ((*c)[1].trailer().digest(), d.value());
  EXPECT_EQ((*c)[1].trailer().blocks(), 0);

  t2.history_tokens = 9;
  c = TokenStateStream(rec, {t1, t2}, 7, "fp");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(c.status().message(), HasSubstr("history of 9"));
  t2.log_tokens.clear();
  c = TokenStateStream(rec, {t1, t2}, 7, "fp");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(c.status().message(), HasSubstr("turn 2 has no log tokens"));
}

}  // namespace
}  // namespace rsd::router
