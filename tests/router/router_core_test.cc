// RouterCore with no transport at all: in-memory fake workers (memory_workers.h) and a caller that
// is a tenant, a deadline and a cancel flag. The same behaviours the gRPC tests check end to end
// (router_service_test.cc, migration_test.cc) hold on the core alone: tenancy, turn journaling
// before TurnDone, replay of a committed turn id, an unreachable owner named, the caller's
// cancellation and deadline reaching the worker, migration and failover moving the session with
// epoch + 1.
#include "router/router_core.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/request_limits.h"
#include "tests/router/memory_workers.h"
#include "tests/support/test_util.h"

namespace rsd::router {
namespace {

using ::rsd::router::testing::FakeWorker;
using ::rsd::router::testing::MemoryWorkers;
using ::rsd::testing::StatusIs;
using ::testing::HasSubstr;

class RouterCoreTest : public ::testing::Test {
 public:
  void SetUp() override {
    dir_ = rsd::testing::MakeTempDir("router_core_test");
    absl::StatusOr<std::unique_ptr<Journal>> j = Journal::Open(dir_ + "/journal");
    ASSERT_TRUE(j.ok()) << j.status();
    journal_ = std::move(*j);
    registry_ = std::make_unique<Registry>(&clock_, absl::Seconds(5));
    RouterOptions o;
    o.owner_wait = absl::Milliseconds(300);
    o.retry_interval = absl::Milliseconds(20);
    o.move_timeout = absl::Seconds(10);
    core_ = std::make_unique<RouterCore>(journal_.get(), registry_.get(), &workers_, o);
  }
  void TearDown() override {
    core_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  FakeWorker& AddWorker(const std::string& id) {
    fakes_.push_back(std::make_unique<FakeWorker>(id));
    FakeWorker& w = *fakes_.back();
    w.model_fingerprint = "fp-smol";
    workers_.Add("mem://" + id, &w);
    WorkerDescriptor d;
    d.id = id;
    d.address = "mem://" + id;
    d.model = "smol";
    d.model_fingerprint = "fp-smol";
    d.context_length = 2048;
    d.load.hot_bytes_free = 1000;
    EXPECT_TRUE(registry_->Register(d).ok());
    return w;
  }

  static Caller CallerFor(const std::string& tenant) {
    Caller c;
    c.tenant = tenant;
    c.deadline = absl::Now() + absl::Seconds(10);
    return c;
  }

  std::string Create(const std::string& tenant = "default") {
    absl::StatusOr<v1::SessionInfo> info =
        core_->CreateSession(CallerFor(tenant), v1::CreateSessionRequest());
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? info->session_id() : "";
  }

  // A session of the default tenant placed on a worker other than `worker`, which is cordoned
  // while it is created (a move's target in the tests).
  std::string CreateAwayFrom(const std::string& worker) {
    registry_->SetCordoned(worker, true).IgnoreError();
    const std::string s = Create();
    registry_->SetCordoned(worker, false).IgnoreError();
    return s;
  }

  struct Turn {
    absl::Status status;
    std::vector<v1::ChatEvent> events;
    bool journaled_before_done = false;
  };
  Turn Chat(const std::string& session, const std::string& message, const std::string& turn_id,
            const Caller& caller) {
    v1::TurnRequest req;
    req.set_session_id(session);
    req.set_message(message);
    req.set_turn_id(turn_id);
    Turn t;
    t.status = core_->Chat(caller, req, [&](const v1::ChatEvent& ev) {
      if (ev.has_done() && !ev.done().replayed()) {
        absl::StatusOr<std::optional<TurnRecord>> last =
            journal_->LastTurn(*ParseSessionId(session));
        t.journaled_before_done =
            last.ok() && last->has_value() && (*last)->turn == ev.done().turn();
      }
      t.events.push_back(ev);
      return true;
    });
    return t;
  }
  Turn Chat(const std::string& session, const std::string& message,
            const std::string& turn_id = "") {
    return Chat(session, message, turn_id, CallerFor("default"));
  }

  std::string dir_;
  SystemClock clock_;
  MemoryWorkers workers_;
  std::vector<std::unique_ptr<FakeWorker>> fakes_;
  std::unique_ptr<Journal> journal_;
  std::unique_ptr<Registry> registry_;
  std::unique_ptr<RouterCore> core_;
};

TEST_F(RouterCoreTest, TurnIsJournaledBeforeDoneAndACommittedTurnIdReplays) {
  FakeWorker& w = AddWorker("w1");
  const std::string s = Create();
  Turn first = Chat(s, "hello", "t-1");
  ASSERT_TRUE(first.status.ok()) << first.status;
  ASSERT_EQ(first.events.size(), 6u);  // five one-byte deltas, then TurnDone
  EXPECT_TRUE(first.journaled_before_done);
  EXPECT_EQ(first.events.back().done().turn(), 1u);
  EXPECT_EQ(first.events.back().done().worker(), "w1");
  Turn again = Chat(s, "hello", "t-1");
  ASSERT_TRUE(again.status.ok()) << again.status;
  ASSERT_EQ(again.events.size(), 2u);
  EXPECT_TRUE(again.events.back().done().replayed());
  EXPECT_EQ(again.events.back().done().text(), "hello");
  EXPECT_EQ(w.chat_count(), 1u);  // the replay never reached the worker
  EXPECT_THAT(Chat(s, "other", "t-1").status,
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("different message")));
}

// What a caller controls and the router stores or echoes is bounded (issue #13): an oversized
// model name, tenant or turn id, or session options past the server's caps, are refused naming
// the field and the bound (never echoing the value), nothing reaches a worker or the journal, and
// values at the bounds are accepted.
TEST_F(RouterCoreTest, OversizedStringsAndOptionsPastTheCapsAreRefused) {
  FakeWorker& w = AddWorker("w1");
  const std::string huge(1 << 20, 'm');
  auto create = [&](const Caller& caller, const v1::CreateSessionRequest& req) {
    return core_->CreateSession(caller, req).status();
  };
  v1::CreateSessionRequest big_model;
  big_model.set_model(huge);
  absl::Status s = create(CallerFor("default"), big_model);
  ASSERT_LT(s.message().size(), 200u) << "the value is not echoed";
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                          HasSubstr("model is 1048576 bytes; at most 256")));
  EXPECT_THAT(create(CallerFor(std::string(kMaxTenantBytes + 1, 't')), v1::CreateSessionRequest()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("the tenant is 129 bytes")));
  v1::CreateSessionRequest opts;
  opts.mutable_options()->set_ttl_seconds(kMaxTtlSeconds + 1);
  EXPECT_THAT(create(CallerFor("default"), opts),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("options.ttl_seconds")));
  opts.mutable_options()->set_ttl_seconds(kMaxTtlSeconds);
  for (int32_t p : {kMaxPriority + 1, kMinPriority - 1, INT32_MAX, INT32_MIN}) {
    opts.mutable_options()->set_priority(p);
    EXPECT_THAT(create(CallerFor("default"), opts),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("options.priority")))
        << p;
  }
  EXPECT_EQ(w.open_count(), 0u) << "nothing refused reached the worker";
  opts.mutable_options()->set_priority(kMaxPriority);
  ASSERT_TRUE(create(CallerFor(std::string(kMaxTenantBytes, 't')), opts).ok());
  EXPECT_EQ(w.open_count(), 1u);

  const std::string id = Create();
  Turn t = Chat(id, "hi", std::string(kMaxTurnIdBytes + 1, 'x'));
  EXPECT_THAT(t.status, StatusIs(absl::StatusCode::kInvalidArgument,
                                 HasSubstr("turn_id is 129 bytes; at most 128")));
  absl::StatusOr<std::optional<TurnRecord>> last = journal_->LastTurn(*ParseSessionId(id));
  ASSERT_TRUE(last.ok());
  EXPECT_FALSE(last->has_value()) << "nothing journaled";
  EXPECT_TRUE(Chat(id, "hi", std::string(kMaxTurnIdBytes, 'x')).status.ok());
}

TEST_F(RouterCoreTest, AnotherTenantsSessionIsUnknown) {
  AddWorker("w1");
  const std::string s = Create("acme");
  EXPECT_TRUE(core_->GetSession(CallerFor("acme"), s).ok());
  EXPECT_THAT(core_->GetSession(CallerFor("other"), s),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("unknown session " + s)));
  EXPECT_THAT(Chat(s, "x", "", CallerFor("other")).status,
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(core_->CloseSession(CallerFor("other"), s),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_TRUE(core_->CloseSession(CallerFor("acme"), s).ok());
  EXPECT_THAT(core_->GetSession(CallerFor("acme"), s),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

// A create placed on a worker that is down but not yet timed out goes to the next ready worker
// (issue #13); with every worker down it is UNAVAILABLE naming the first one it tried.
TEST_F(RouterCoreTest, CreateOnAnUnreachableWorkerTriesAnother) {
  FakeWorker& w1 = AddWorker("w1");
  FakeWorker& w2 = AddWorker("w2");
  for (int i = 0; i < 4; ++i) {
    const std::string down = i % 2 == 0 ? "w1" : "w2";
    workers_.SetDown("mem://" + down, true);
    absl::StatusOr<v1::SessionInfo> info =
        core_->CreateSession(CallerFor("default"), v1::CreateSessionRequest());
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_NE(info->worker(), down) << "placed on the unreachable worker";
    EXPECT_TRUE(Chat(info->session_id(), "hi").status.ok());
    workers_.SetDown("mem://" + down, false);
  }
  EXPECT_EQ(w1.open_count(), 2u);
  EXPECT_EQ(w2.open_count(), 2u);
  workers_.SetDown("mem://w1", true);
  workers_.SetDown("mem://w2", true);
  EXPECT_THAT(core_->CreateSession(CallerFor("default"), v1::CreateSessionRequest()).status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("at mem://w")));
}

TEST_F(RouterCoreTest, UnreachableOwnerIsUnavailableNamingIt) {
  AddWorker("w1");
  const std::string s = Create();
  workers_.SetDown("mem://w1", true);
  EXPECT_THAT(Chat(s, "x").status,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("worker 'w1' at mem://w1")));
  // Describe falls back to the journal.
  absl::StatusOr<v1::SessionInfo> info = core_->GetSession(CallerFor("default"), s);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->state(), "unreachable");
}

// Issue #13: one tenant cannot take the journal or the workers from the others.
TEST_F(RouterCoreTest, TenantQuotasBoundSessionsAndRunningTurns) {
  RouterOptions o;
  o.quotas.sessions = 2;
  o.quotas.turns = 1;
  o.quotas.pinned = 1;
  core_ = std::make_unique<RouterCore>(journal_.get(), registry_.get(), &workers_, o);
  FakeWorker& w = AddWorker("w1");
  const std::string a1 = Create("a");
  const std::string a2 = Create("a");
  EXPECT_THAT(core_->CreateSession(CallerFor("a"), v1::CreateSessionRequest()),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("tenant 'a' holds 2 sessions, its quota "
                                 "(--max-sessions-per-tenant 2)")));
  EXPECT_EQ(w.Opened().size(), 2u);    // nothing was placed for the refused one
  const std::string b1 = Create("b");  // another tenant is not held back
  ASSERT_TRUE(core_->CloseSession(CallerFor("a"), a1).ok());
  const std::string a3 = Create("a");  // a close gives the room back

  // One running turn of tenant a: a second is refused, b's runs.
  w.block_until_cancelled = true;
  std::atomic<bool> gone{false};
  Caller blocked = CallerFor("a");
  blocked.cancelled = [&] { return gone.load(); };
  std::thread running([&] { Chat(a2, "x", "", blocked); });
  const auto chats = [&w] { return w.chat_count(); };
  for (int i = 0; i < 1000 && chats() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(core_->quotas().turns("a"), 1);
  EXPECT_THAT(Chat(a3, "y", "", CallerFor("a")).status,
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("tenant 'a' has 1 turns running, its quota "
                                 "(--max-turns-per-tenant 1)")));
  gone = true;
  running.join();
  w.block_until_cancelled = false;
  EXPECT_EQ(core_->quotas().turns("a"), 0);
  EXPECT_TRUE(Chat(a3, "y", "", CallerFor("a")).status.ok());
  EXPECT_TRUE(Chat(b1, "z", "", CallerFor("b")).status.ok());

  // Pinned sessions have their own quota.
  v1::CreateSessionRequest pinned;
  pinned.mutable_options()->set_pin(true);
  ASSERT_TRUE(core_->CreateSession(CallerFor("c"), pinned).ok());
  EXPECT_THAT(core_->CreateSession(CallerFor("c"), pinned),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("tenant 'c' holds 1 pinned sessions, its quota "
                                 "(--max-pinned-per-tenant 1)")));
  EXPECT_TRUE(core_->CreateSession(CallerFor("c"), v1::CreateSessionRequest()).ok());

  // A restarted router counts the journal's sessions against the quota.
  core_ = std::make_unique<RouterCore>(journal_.get(), registry_.get(), &workers_, o);
  ASSERT_TRUE(core_->LoadJournal().ok());
  EXPECT_EQ(core_->quotas().sessions("a"), 2);
  EXPECT_EQ(core_->quotas().pinned("c"), 1);
  EXPECT_THAT(core_->CreateSession(CallerFor("a"), v1::CreateSessionRequest()),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("holds 2 sessions")));
}

// Issue #13: a tenant's sessions hold at most so many tokens of history together (the fake worker
// appends 100 tokens a turn); closes and undos give room back, and a restarted router counts the
// journal's history.
TEST_F(RouterCoreTest, TenantHistoryQuotaBoundsTheTokensItsSessionsHold) {
  RouterOptions o;
  o.quotas.history_tokens = 250;
  core_ = std::make_unique<RouterCore>(journal_.get(), registry_.get(), &workers_, o);
  AddWorker("w1");
  const std::string a1 = Create("a"), a2 = Create("a"), b1 = Create("b");
  ASSERT_TRUE(Chat(a1, "x", "", CallerFor("a")).status.ok());
  ASSERT_TRUE(Chat(a2, "x", "", CallerFor("a")).status.ok());
  ASSERT_TRUE(Chat(a1, "y", "", CallerFor("a")).status.ok());  // 200 < 250: runs, to 300
  EXPECT_EQ(core_->quotas().history_tokens("a"), 300);
  EXPECT_THAT(Chat(a2, "z", "", CallerFor("a")).status,
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("tenant 'a' holds 300 tokens of session history, its quota "
                                 "(--max-history-tokens-per-tenant 250)")));
  EXPECT_EQ(journal_->ListTurns(*ParseSessionId(a2))->size(), 1u);  // nothing of it committed
  EXPECT_TRUE(Chat(b1, "z", "", CallerFor("b")).status.ok());       // another tenant runs
  ASSERT_TRUE(core_->UndoTurn(CallerFor("a"), a1).ok());            // 300 - 100
  EXPECT_EQ(core_->quotas().history_tokens("a"), 200);
  ASSERT_TRUE(Chat(a2, "z", "", CallerFor("a")).status.ok());  // to 300 again
  ASSERT_TRUE(core_->CloseSession(CallerFor("a"), a2).ok());   // 300 - 200
  EXPECT_EQ(core_->quotas().history_tokens("a"), 100);
  core_ = std::make_unique<RouterCore>(journal_.get(), registry_.get(), &workers_, o);
  ASSERT_TRUE(core_->LoadJournal().ok());
  EXPECT_EQ(core_->quotas().history_tokens("a"), 100);
  EXPECT_EQ(core_->quotas().history_tokens("b"), 100);
}

// Issue #13: a session idle for twice its TTL leaves the journal as it leaves its worker, and
// stops counting against its tenant's quotas; one without a TTL, or active, stays.
TEST_F(RouterCoreTest, SessionsIdlePastTwiceTheirTtlLeaveTheJournalAndTheQuotas) {
  FakeWorker& w = AddWorker("w1");
  v1::CreateSessionRequest with_ttl;
  with_ttl.mutable_options()->set_ttl_seconds(60);
  absl::StatusOr<v1::SessionInfo> a = core_->CreateSession(CallerFor("a"), with_ttl);
  absl::StatusOr<v1::SessionInfo> fresh = core_->CreateSession(CallerFor("a"), with_ttl);
  ASSERT_TRUE(a.ok() && fresh.ok());
  const std::string forever = Create("a");
  ASSERT_TRUE(Chat(a->session_id(), "x", "", CallerFor("a")).status.ok());
  const absl::Time now = absl::Now();
  EXPECT_EQ(core_->ExpireIdleSessions(now + absl::Seconds(110)), 0);
  EXPECT_EQ(core_->quotas().sessions("a"), 3);
  EXPECT_EQ(core_->quotas().history_tokens("a"), 100);
  // The second session turns at +100 s (its clock is the journal's commit time).
  const int64_t active_ms = absl::ToUnixMillis(now + absl::Seconds(100));
  TurnRecord late;
  late.turn = 1;
  late.committed_unix_ms = active_ms;
  ASSERT_TRUE(journal_->CommitTurn(*ParseSessionId(fresh->session_id()), late).ok());
  EXPECT_EQ(core_->ExpireIdleSessions(now + absl::Seconds(125)), 1);
  EXPECT_THAT(core_->GetSession(CallerFor("a"), a->session_id()).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("unknown session")));
  const std::vector<std::string> closed = w.Closed();
  ASSERT_EQ(closed.size(), 1u);  // closed on its worker too
  EXPECT_EQ(closed[0], a->session_id());
  EXPECT_EQ(core_->quotas().sessions("a"), 2);
  EXPECT_EQ(core_->quotas().history_tokens("a"), 0);
  EXPECT_EQ(core_->ExpireIdleSessions(now + absl::Seconds(215)), 0);  // 115 s after its turn
  EXPECT_EQ(core_->ExpireIdleSessions(now + absl::Seconds(225)), 1);
  EXPECT_EQ(core_->ExpireIdleSessions(now + absl::Hours(24 * 365)), 0);  // no TTL: stays
  EXPECT_TRUE(core_->GetSession(CallerFor("a"), forever).ok());
}

// Issue #14: a worker that found a session's stored data damaged reports it; the router rebuilds
// it from its journal on another ready worker, or on the reporting worker when it is the only one.
TEST_F(RouterCoreTest, ASessionAWorkerReportsDamagedIsRebuiltFromTheJournal) {
  FakeWorker& w1 = AddWorker("w1");
  const std::string s = Create();
  ASSERT_TRUE(Chat(s, "hello").status.ok());
  FakeWorker& w2 = AddWorker("w2");
  v1::SessionRef ref;
  ref.set_session_id(s);
  ref.set_epoch(1);
  w1.Forget(s);                         // what the damage cost w1
  core_->NoteQuarantined("w2", {ref});  // not w2's session: ignored
  core_->RebuildQuarantined();
  EXPECT_EQ(journal_->GetSession(*ParseSessionId(s))->worker, "w1");
  core_->NoteQuarantined("w1", {ref});
  core_->RebuildQuarantined();
  SessionRecord rec = *journal_->GetSession(*ParseSessionId(s));
  EXPECT_EQ(rec.worker, "w2");
  EXPECT_EQ(rec.epoch, 2u);
  EXPECT_TRUE(w2.Has(s));
  Turn next = Chat(s, "again");
  ASSERT_TRUE(next.status.ok()) << next.status;
  EXPECT_EQ(next.events.back().done().turn(), 2u);

  // The only ready worker takes its own damaged session back.
  w2.Forget(s);
  ASSERT_TRUE(registry_->SetCordoned("w1", true).ok());
  ref.set_epoch(2);
  core_->NoteQuarantined("w2", {ref});
  core_->RebuildQuarantined();
  rec = *journal_->GetSession(*ParseSessionId(s));
  EXPECT_EQ(rec.worker, "w2");
  EXPECT_EQ(rec.epoch, 3u);
  EXPECT_TRUE(w2.Has(s));
  EXPECT_TRUE(Chat(s, "and again").status.ok());
}

TEST_F(RouterCoreTest, CallerCancellationAndDeadlineReachTheWorker) {
  FakeWorker& w = AddWorker("w1");
  const std::string s = Create();
  w.block_until_cancelled = true;
  std::atomic<bool> gone{false};
  Caller caller = CallerFor("default");
  caller.cancelled = [&] { return gone.load(); };
  std::thread leave([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    gone = true;
  });
  EXPECT_THAT(Chat(s, "x", "", caller).status,
              StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  leave.join();
  EXPECT_TRUE(w.saw_cancel);

  w.saw_cancel = false;
  Caller hurried = CallerFor("default");
  hurried.deadline = absl::Now() + absl::Milliseconds(100);
  EXPECT_THAT(Chat(s, "x", "", hurried).status,
              StatusIs(absl::StatusCode::kDeadlineExceeded, ::testing::_));
  EXPECT_TRUE(w.saw_cancel);
}

TEST_F(RouterCoreTest, MigrationAndFailoverMoveTheSessionWithTheNextEpoch) {
  FakeWorker& w1 = AddWorker("w1");
  FakeWorker& w2 = AddWorker("w2");
  const std::string s = CreateAwayFrom("w2");
  ASSERT_TRUE(Chat(s, "one").status.ok());

  absl::StatusOr<v1::MigrateResponse> moved =
      core_->Migrate(s, "w2", "", absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->route(), "direct");  // worker to worker: the router only orchestrated
  EXPECT_EQ(w1.Imports().size() + w2.Imports().size(), 1u);
  EXPECT_EQ(moved->from_worker(), "w1");
  EXPECT_EQ(moved->session().epoch(), 2u);
  EXPECT_FALSE(w1.Has(s));
  EXPECT_EQ(w2.Get(s).log.size(), 100u);
  Turn second = Chat(s, "two");
  ASSERT_TRUE(second.status.ok()) << second.status;
  EXPECT_EQ(second.events.back().done().worker(), "w2");
  EXPECT_EQ(second.events.back().done().usage().history_tokens(), 200);

  // w2 goes away; failover rebuilds the session on w1 from the journal's token log.
  workers_.SetDown("mem://w2", true);
  absl::StatusOr<std::vector<v1::MigrateResponse>> failed_over =
      core_->Failover("w2", absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(failed_over.ok()) << failed_over.status();
  ASSERT_EQ(failed_over->size(), 1u);
  EXPECT_EQ((*failed_over)[0].session().epoch(), 3u);
  EXPECT_EQ(w1.Get(s).log.size(), 200u);
  EXPECT_EQ(w1.Get(s).turn_ends, (std::vector<int64_t>{100, 200}));
  Turn third = Chat(s, "three");
  ASSERT_TRUE(third.status.ok()) << third.status;
  EXPECT_EQ(third.events.back().done().worker(), "w1");
  EXPECT_EQ(third.events.back().done().turn(), 3u);
  EXPECT_EQ((*failed_over)[0].route(), "journal");
}

TEST_F(RouterCoreTest, ATargetTheSourceCannotReachGetsTheStateThroughTheRouter) {
  AddWorker("w1");
  FakeWorker& w2 = AddWorker("w2");
  const std::string s = CreateAwayFrom("w2");
  ASSERT_TRUE(Chat(s, "one").status.ok());
  workers_.SetFencedFromWorkers("mem://w2", true);
  absl::StatusOr<v1::MigrateResponse> moved =
      core_->Migrate(s, "w2", "", absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->route(), "router");
  EXPECT_EQ(moved->session().epoch(), 2u);
  EXPECT_EQ(w2.Get(s).log.size(), 100u);

  // A refusal by the target is final: no second try through the router.
  FakeWorker& w3 = AddWorker("w3");
  w3.model_fingerprint = "fp-other";
  const size_t before = w3.Imports().size();
  EXPECT_THAT(core_->Migrate(s, "w3", "", absl::Now() + absl::Seconds(10)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("fingerprint")));
  EXPECT_EQ(w3.Imports().size(), before + 1);
}

// A move whose reply is lost: the target's import commits after the router gave up and closed the
// copy there, leaving a copy the journal does not name (it would hold the target's memory and
// refuse the next move there until the worker registers again). The monitor's scan closes it once
// the transfer's deadline has passed, and not before; a copy the journal names by then (the move
// retried and switched) stays.
TEST_F(RouterCoreTest, ACopyImportedAfterItsMoveFailedIsClosedOnceTheTransfersDeadlinePassed) {
  FakeWorker& w1 = AddWorker("w1");
  FakeWorker& w2 = AddWorker("w2");
  const std::string s = CreateAwayFrom("w2");
  ASSERT_TRUE(Chat(s, "one").status.ok());

  workers_.SetRepliesLost(true);
  EXPECT_THAT(core_->Migrate(s, "w2", "", absl::Now() + absl::Seconds(10)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("reply")));
  workers_.SetRepliesLost(false);
  ASSERT_EQ(workers_.LandLateImports(), 1);
  ASSERT_TRUE(w2.Has(s));
  EXPECT_EQ(w2.Get(s).epoch, 2u);
  absl::StatusOr<SessionRecord> rec = journal_->GetSession(*ParseSessionId(s));
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->worker, "w1");
  EXPECT_EQ(rec->epoch, 1u);

  core_->CloseLateCopies(absl::Now());  // the transfer could still commit: not yet
  EXPECT_TRUE(w2.Has(s));
  // A worker that does not answer is asked again only some seconds later (the monitor that
  // closes copies also fails over dead workers).
  const absl::Time after = absl::Now() + absl::Minutes(5);
  workers_.SetDown("mem://w2", true);
  core_->CloseLateCopies(after);
  workers_.SetDown("mem://w2", false);
  core_->CloseLateCopies(after + absl::Seconds(1));
  EXPECT_TRUE(w2.Has(s));
  core_->CloseLateCopies(after + absl::Seconds(6));
  EXPECT_FALSE(w2.Has(s));
  EXPECT_TRUE(w1.Has(s));
  EXPECT_EQ(core_->late_copies_closed(), 1);
  Turn two = Chat(s, "two");
  ASSERT_TRUE(two.status.ok()) << two.status;
  EXPECT_EQ(two.events.back().done().worker(), "w1");

  // Lost again, then retried: the journal names the retry's copy at the same epoch, which stays.
  workers_.SetRepliesLost(true);
  EXPECT_FALSE(core_->Migrate(s, "w2", "", absl::Now() + absl::Seconds(10)).ok());
  workers_.SetRepliesLost(false);
  absl::StatusOr<v1::MigrateResponse> moved =
      core_->Migrate(s, "w2", "", absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->session().epoch(), 2u);
  core_->CloseLateCopies(absl::Now() + absl::Minutes(5));
  EXPECT_TRUE(w2.Has(s));
  EXPECT_EQ(core_->late_copies_closed(), 1);
  Turn three = Chat(s, "three");
  ASSERT_TRUE(three.status.ok()) << three.status;
  EXPECT_EQ(three.events.back().done().worker(), "w2");
}

// Deduplicated migration on the router's route (issue #15): the router offers the target the
// chunk keys from the stream's header, leaves out the blocks of the chunks it holds (the stream
// re-signed after the source's digest checked out), and pipes the session again whole when the
// target no longer holds them (ABORTED).
TEST_F(RouterCoreTest, APipedStateLeavesOutWhatTheTargetHoldsAndGoesWholeIfItNoLongerDoes) {
  AddWorker("w1");
  FakeWorker& w2 = AddWorker("w2");
  const std::string s = CreateAwayFrom("w2");
  ASSERT_TRUE(Chat(s, "one").status.ok());
  workers_.SetFencedFromWorkers("mem://w2", true);
  w2.held_chunks = 1;  // the fake exports one chunk of two blocks
  absl::StatusOr<v1::MigrateResponse> moved =
      core_->Migrate(s, "w2", "kv", absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->route(), "router");
  EXPECT_EQ(w2.held_offers.load(), 1);
  EXPECT_EQ(moved->blocks(), 0);
  EXPECT_EQ(moved->payload_bytes(), 0);
  EXPECT_EQ(moved->shared_tokens(), 1);
  ASSERT_EQ(w2.Imports().size(), 1u);
  EXPECT_EQ(w2.Imports()[0].front().header().shared_chunks(), 1);
  EXPECT_EQ(w2.Imports()[0].size(), 2u);  // header and trailer only
  // Back to w1 (which holds nothing), then to w2 again, which refuses the shared chunks now.
  ASSERT_TRUE(core_->Migrate(s, "w1", "kv", absl::Now() + absl::Seconds(10)).ok());
  w2.abort_shared_imports = true;
  moved = core_->Migrate(s, "w2", "kv", absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->route(), "router");
  EXPECT_EQ(moved->blocks(), 2);
  EXPECT_EQ(moved->shared_tokens(), 0);
  ASSERT_EQ(w2.Imports().size(), 3u);  // the refused stream, then the whole one
  EXPECT_EQ(w2.Imports()[1].front().header().shared_chunks(), 1);
  EXPECT_EQ(w2.Imports()[2].front().header().shared_chunks(), 0);
  EXPECT_EQ(w2.Get(s).log.size(), 100u);
}

}  // namespace
}  // namespace rsd::router
