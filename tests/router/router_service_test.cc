// The router's gRPC services in-process against fake workers (real gRPC on localhost, port 0):
// create/chat/describe/undo/close, turn-id replay, journal-before-TurnDone, worker errors passed
// through, tenants, dead and unreachable owners, deadline propagation, router restart.
#include "router/router_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/router/router_test_fixture.h"

namespace rsd::router {
namespace {

using ::rsd::router::testing::FakeWorker;
using ::rsd::router::testing::RouterServiceTest;
using ::testing::HasSubstr;

TEST_F(RouterServiceTest, CreateChatDescribeUndoClose) {
  FakeWorker& w = AddWorker("w1");
  v1::SessionInfo info;
  ASSERT_TRUE(Create(&info).ok());
  EXPECT_EQ(info.worker(), "w1");
  EXPECT_EQ(info.epoch(), 1u);
  EXPECT_EQ(info.tenant(), "default");
  EXPECT_EQ(info.model(), "smol");
  EXPECT_EQ(info.options().priority(), 3);
  ASSERT_EQ(w.Opened().size(), 1u);
  EXPECT_EQ(w.Opened()[0].ref().session_id(), info.session_id());
  EXPECT_EQ(w.Opened()[0].ref().tenant(), "default");
  EXPECT_EQ(w.Opened()[0].ref().epoch(), 1u);
  EXPECT_EQ(w.Opened()[0].options().priority(), 3);

  Turn t = Chat(info.session_id(), "hey");
  ASSERT_TRUE(t.status.ok()) << t.status.error_message();
  ASSERT_EQ(t.events.size(), 4u);  // three deltas and the TurnDone
  EXPECT_EQ(t.events[1].delta().text(), "e");
  const v1::TurnDone& done = t.events[3].done();
  EXPECT_EQ(done.turn(), 1u);
  EXPECT_EQ(done.worker(), "w1");
  EXPECT_TRUE(t.journaled_before_done);
  // The router drew a seed and the journal recorded the one the worker ran with.
  ASSERT_EQ(w.Chats().size(), 1u);
  ASSERT_TRUE(w.Chats()[0].turn().sampling().has_seed());
  EXPECT_EQ(w.Chats()[0].ref().epoch(), 1u);
  const TurnRecord rec = **journal_->LastTurn(*ParseSessionId(info.session_id()));
  EXPECT_EQ(rec.seed, w.Chats()[0].turn().sampling().seed());
  EXPECT_EQ(rec.message, "hey");
  EXPECT_EQ(rec.tokens, (std::vector<int32_t>{'h', 'e', 'y'}));
  EXPECT_EQ(done.seed(), rec.seed);

  ASSERT_TRUE(Chat(info.session_id(), "again").status.ok());
  v1::SessionRequest sreq;
  sreq.set_session_id(info.session_id());
  v1::SessionInfo got;
  ASSERT_TRUE(client_->GetSession(Ctx().get(), sreq, &got).ok());
  EXPECT_EQ(got.turns(), 2u);
  EXPECT_EQ(got.bytes().hot(), 4096);
  EXPECT_EQ(got.state(), "hot");
  EXPECT_EQ(got.worker(), "w1");

  v1::SessionInfo undone;
  ASSERT_TRUE(client_->UndoTurn(Ctx().get(), sreq, &undone).ok());
  EXPECT_EQ(undone.turns(), 1u);
  EXPECT_EQ(undone.worker(), "w1");
  EXPECT_EQ(journal_->ListTurns(*ParseSessionId(info.session_id()))->size(), 1u);

  v1::CloseSessionResponse closed;
  ASSERT_TRUE(client_->CloseSession(Ctx().get(), sreq, &closed).ok());
  EXPECT_EQ(w.Closed().size(), 1u);
  grpc::Status s = client_->GetSession(Ctx().get(), sreq, &got);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr(info.session_id()));
}

TEST_F(RouterServiceTest, RetriedTurnIdReplaysFromTheJournal) {
  FakeWorker& w = AddWorker("w1");
  v1::SessionInfo info;
  ASSERT_TRUE(Create(&info).ok());
  Turn first = Chat(info.session_id(), "abc", "turn-1");
  ASSERT_TRUE(first.status.ok());
  Turn again = Chat(info.session_id(), "abc", "turn-1");
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(w.chat_count(), 1u);  // the worker was not asked again
  ASSERT_EQ(again.events.size(), 2u);
  EXPECT_EQ(again.events[0].delta().offset(), 0);
  EXPECT_EQ(again.events[0].delta().text(), "abc");
  EXPECT_EQ(again.events[0].delta().tokens_size(), 3);
  const v1::TurnDone& d = again.events[1].done();
  EXPECT_TRUE(d.replayed());
  EXPECT_EQ(d.turn(), 1u);
  EXPECT_EQ(d.seed(), first.events.back().done().seed());
  EXPECT_EQ(d.usage().history_tokens(), 100);

  Turn other = Chat(info.session_id(), "different", "turn-1");
  EXPECT_EQ(other.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(other.status.error_message(), HasSubstr("turn-1"));
}

TEST_F(RouterServiceTest, WorkerErrorsPassThroughUnchanged) {
  FakeWorker& w = AddWorker("w1");
  v1::SessionInfo info;
  ASSERT_TRUE(Create(&info).ok());
  {
    absl::MutexLock l(&w.mu_);
    w.fail = absl::ResourceExhaustedError("queue full (8 turns waiting)");
  }
  Turn t = Chat(info.session_id(), "x");
  EXPECT_EQ(t.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(t.status.error_message(), "queue full (8 turns waiting)");
  EXPECT_THAT(*journal_->ListTurns(*ParseSessionId(info.session_id())), ::testing::IsEmpty());
}

TEST_F(RouterServiceTest, BadIdsUnknownModelsAndNoWorkers) {
  v1::SessionInfo info;
  grpc::Status s = Create(&info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  AddWorker("w1", "smol");
  s = Create(&info, "llama");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("unknown model 'llama'; known: smol"));
  Turn t = Chat("nothex", "x");
  EXPECT_EQ(t.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  t = Chat("0123456789abcdef0123456789abcdef", "x");
  EXPECT_EQ(t.status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(RouterServiceTest, OtherTenantsSessionIsNotFound) {
  AddWorker("w1");
  v1::SessionInfo info;
  ASSERT_TRUE(Create(&info, "", "acme").ok());
  EXPECT_EQ(info.tenant(), "acme");
  Turn t = Chat(info.session_id(), "x", "", "globex");
  EXPECT_EQ(t.status.error_code(), grpc::StatusCode::NOT_FOUND);
  t = Chat(info.session_id(), "x");  // the default tenant
  EXPECT_EQ(t.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(Chat(info.session_id(), "x", "", "acme").status.ok());
  v1::SessionRequest sreq;
  sreq.set_session_id(info.session_id());
  v1::CloseSessionResponse closed;
  EXPECT_EQ(client_->CloseSession(Ctx("globex").get(), sreq, &closed).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // Admin sees every tenant.
  v1::DescribeSessionRequest dreq;
  dreq.set_session_id(info.session_id());
  v1::SessionInfo got;
  ASSERT_TRUE(admin_->DescribeSession(Ctx().get(), dreq, &got).ok());
  EXPECT_EQ(got.tenant(), "acme");
}

TEST_F(RouterServiceTest, DeadOwnerIsUnavailableDescribeFallsBackCloseStillWorks) {
  AddWorker("w1");
  v1::SessionInfo info;
  ASSERT_TRUE(Create(&info).ok());
  ASSERT_TRUE(Chat(info.session_id(), "hi").status.ok());
  clock_.Advance(absl::Seconds(6));
  Turn t = Chat(info.session_id(), "x");
  EXPECT_EQ(t.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(t.status.error_message(), HasSubstr("worker 'w1'"));
  EXPECT_THAT(t.status.error_message(), HasSubstr("dead"));

  v1::SessionRequest sreq;
  sreq.set_session_id(info.session_id());
  v1::SessionInfo got;
  ASSERT_TRUE(client_->GetSession(Ctx().get(), sreq, &got).ok());
  EXPECT_EQ(got.state(), "unreachable");
  EXPECT_EQ(got.turns(), 1u);
  EXPECT_EQ(got.token_count(), 100);
  EXPECT_EQ(got.worker(), "w1");

  v1::ListWorkersResponse workers;
  ASSERT_TRUE(admin_->ListWorkers(Ctx().get(), v1::ListWorkersRequest(), &workers).ok());
  ASSERT_EQ(workers.workers_size(), 1);
  EXPECT_EQ(workers.workers(0).state(), "dead");
  EXPECT_EQ(workers.workers(0).sessions(), 1);

  v1::CloseSessionResponse closed;
  ASSERT_TRUE(client_->CloseSession(Ctx().get(), sreq, &closed).ok());
  EXPECT_EQ(client_->GetSession(Ctx().get(), sreq, &got).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(RouterServiceTest, SessionTheWorkerLostIsDescribedFromTheJournal) {
  FakeWorker& w = AddWorker("w1");
  v1::SessionInfo info;
  ASSERT_TRUE(Create(&info).ok());
  ASSERT_TRUE(Chat(info.session_id(), "hi").status.ok());
  w.Forget(info.session_id());
  v1::DescribeSessionRequest dreq;
  dreq.set_session_id(info.session_id());
  v1::SessionInfo got;
  ASSERT_TRUE(admin_->DescribeSession(Ctx().get(), dreq, &got).ok());
  EXPECT_EQ(got.state(), "missing");
  EXPECT_EQ(got.turns(), 1u);
  // A turn gets the worker's own answer.
  Turn t = Chat(info.session_id(), "x");
  EXPECT_EQ(t.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(t.status.error_message(), HasSubstr("fake worker"));
}

TEST_F(RouterServiceTest, UnreachableWorkerIsUnavailableNamingIt) {
  AddWorker("w1");
  v1::SessionInfo info;
  ASSERT_TRUE(Create(&info).ok());
  workers_["w1"].server->Shutdown();
  Turn t = Chat(info.session_id(), "x");
  EXPECT_EQ(t.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(t.status.error_message(), HasSubstr("worker 'w1' at " + workers_["w1"].address));
}

TEST_F(RouterServiceTest, ClientDeadlineReachesTheWorker) {
  FakeWorker& w = AddWorker("w1");
  v1::SessionInfo info;
  ASSERT_TRUE(Create(&info).ok());
  w.block_until_cancelled = true;
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  Turn t = Chat(info.session_id(), "x", "", "", std::move(ctx));
  EXPECT_EQ(t.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  for (int i = 0; i < 400 && !w.saw_cancel; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(w.saw_cancel);
}

TEST_F(RouterServiceTest, PlacementSpreadsAndSkipsCordoned) {
  AddWorker("w1", "smol", 1000);
  AddWorker("w2", "smol", 1000);
  v1::SessionInfo a, b, c;
  ASSERT_TRUE(Create(&a).ok());
  ASSERT_TRUE(Create(&b).ok());
  EXPECT_NE(a.worker(), b.worker());
  v1::WorkerRequest wreq;
  wreq.set_worker("w1");
  v1::WorkerInfo winfo;
  ASSERT_TRUE(admin_->Cordon(Ctx().get(), wreq, &winfo).ok());
  EXPECT_EQ(winfo.state(), "cordoned");
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Create(&c).ok());
    EXPECT_EQ(c.worker(), "w2");
  }
  v1::ListSessionsRequest lreq;
  lreq.set_worker("w2");
  v1::ListSessionsResponse sessions;
  ASSERT_TRUE(admin_->ListSessions(Ctx().get(), lreq, &sessions).ok());
  EXPECT_EQ(sessions.sessions_size(), 4);
  v1::ListModelsResponse models;
  ASSERT_TRUE(client_->ListModels(Ctx().get(), v1::ListModelsRequest(), &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).workers_size(), 2);
  EXPECT_EQ(models.models(0).context_length(), 2048);
}

// Issue #13: listings come in pages, so that no reply outgrows a message however many sessions.
TEST_F(RouterServiceTest, SessionListingsArePaged) {
  AddWorker("w1");
  AddWorker("w2");
  std::vector<std::string> on_w1, all;
  for (int i = 0; i < 7; ++i) {
    v1::SessionInfo c;
    ASSERT_TRUE(Create(&c).ok());
    all.push_back(c.session_id());
    if (c.worker() == "w1") on_w1.push_back(c.session_id());
  }
  std::sort(all.begin(), all.end());
  std::sort(on_w1.begin(), on_w1.end());
  const auto list = [&](const std::string& worker, int page_size, int* pages) {
    std::vector<std::string> got;
    v1::ListSessionsRequest req;
    req.set_worker(worker);
    req.set_page_size(page_size);
    *pages = 0;
    for (;;) {
      v1::ListSessionsResponse resp;
      grpc::Status s = admin_->ListSessions(Ctx().get(), req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      EXPECT_LE(resp.sessions_size(), page_size);
      for (const v1::SessionInfo& i : resp.sessions()) got.push_back(i.session_id());
      ++*pages;
      if (resp.next_page_token().empty()) break;
      req.set_page_token(resp.next_page_token());
    }
    return got;
  };
  int pages = 0;
  EXPECT_EQ(list("", 3, &pages), all);  // every session once, in id order
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(list("w1", 2, &pages), on_w1);
  v1::ListSessionsRequest bad;
  bad.set_page_token("not-a-token");
  v1::ListSessionsResponse resp;
  grpc::Status s = admin_->ListSessions(Ctx().get(), bad, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("page_token"));
  bad.set_page_token("");
  bad.set_page_size(-1);
  EXPECT_EQ(admin_->ListSessions(Ctx().get(), bad, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::ListSessionsRequest huge;
  huge.set_page_size(1 << 30);  // capped, not refused
  ASSERT_TRUE(admin_->ListSessions(Ctx().get(), huge, &resp).ok());
  EXPECT_EQ(resp.sessions_size(), 7);
}

// Issue #14: a session a worker reports damaged in its heartbeat is rebuilt from the journal.
TEST_F(RouterServiceTest, AQuarantinedSessionInAHeartbeatIsRebuilt) {
  FakeWorker& w1 = AddWorker("w1");
  v1::SessionInfo info;
  ASSERT_TRUE(Create(&info).ok());
  ASSERT_TRUE(Chat(info.session_id(), "hello").status.ok());
  FakeWorker& w2 = AddWorker("w2");
  w1.Forget(info.session_id());
  grpc::ClientContext ctx;
  v1::HeartbeatRequest hb;
  const testing::WorkerServer& w = workers_.at("w1");
  *hb.mutable_status() = StatusOf("w1", w.address, w.model, w.hot_free, w.fingerprint);
  v1::SessionRef* q = hb.mutable_status()->add_quarantined();
  q->set_session_id(info.session_id());
  q->set_epoch(1);
  v1::HeartbeatResponse resp;
  ASSERT_TRUE(reg_->Heartbeat(&ctx, hb, &resp).ok());
  core_->RebuildQuarantined();
  EXPECT_EQ(Journaled(info.session_id()).worker, "w2");
  EXPECT_TRUE(w2.Has(info.session_id()));
  EXPECT_TRUE(Chat(info.session_id(), "again").status.ok());
}

// Issue #14: a worker that registers a session with fewer committed turns than the journal holds
// lost writes in its storage; the session is rebuilt from the journal, so no acknowledged turn is
// lost. A worker level with the journal keeps its sessions.
TEST_F(RouterServiceTest, AWorkerBehindTheJournalHasTheSessionRebuilt) {
  AddWorker("w1");
  v1::SessionInfo kept, behind;
  ASSERT_TRUE(Create(&kept).ok());
  ASSERT_TRUE(Create(&behind).ok());
  for (const v1::SessionInfo* s : {&kept, &behind}) {
    ASSERT_TRUE(Chat(s->session_id(), "one").status.ok());
    ASSERT_TRUE(Chat(s->session_id(), "two").status.ok());
  }
  FakeWorker& w2 = AddWorker("w2");
  grpc::ClientContext ctx;
  v1::RegisterRequest req;
  const testing::WorkerServer& w = workers_.at("w1");
  *req.mutable_status() = StatusOf("w1", w.address, w.model, w.hot_free, w.fingerprint);
  for (const v1::SessionInfo* s : {&kept, &behind}) {
    v1::SessionRef* r = req.add_sessions();
    r->set_session_id(s->session_id());
    r->set_epoch(1);
  }
  req.add_session_turns(2);  // kept: as the journal
  req.add_session_turns(1);  // behind: its second turn was lost
  v1::RegisterResponse resp;
  ASSERT_TRUE(reg_->Register(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.drop_size(), 0);
  core_->RebuildQuarantined();
  EXPECT_EQ(Journaled(kept.session_id()).worker, "w1");
  const SessionRecord moved = Journaled(behind.session_id());
  EXPECT_EQ(moved.worker, "w2");
  EXPECT_EQ(moved.epoch, 2u);
  ASSERT_TRUE(w2.Has(behind.session_id()));
  Turn third = Chat(behind.session_id(), "three");
  ASSERT_TRUE(third.status.ok()) << third.status.error_message();
  EXPECT_EQ(third.events.back().done().turn(), 3u);  // both journaled turns are there
}

TEST_F(RouterServiceTest, RestartedRouterServesFromItsJournal) {
  AddWorker("w1");
  v1::SessionInfo info;
  ASSERT_TRUE(Create(&info).ok());
  ASSERT_TRUE(Chat(info.session_id(), "abc", "t1").status.ok());
  StopRouter();
  StartRouter();
  // Before the worker re-registers: the journal answers, and a heartbeat asks to re-register.
  v1::SessionRequest sreq;
  sreq.set_session_id(info.session_id());
  v1::SessionInfo got;
  ASSERT_TRUE(client_->GetSession(Ctx().get(), sreq, &got).ok());
  EXPECT_EQ(got.state(), "unreachable");
  EXPECT_EQ(got.turns(), 1u);
  Turn replay = Chat(info.session_id(), "abc", "t1");
  ASSERT_TRUE(replay.status.ok());
  EXPECT_TRUE(replay.events.back().done().replayed());
  v1::HeartbeatRequest hb;
  hb.mutable_status()->set_id("w1");
  hb.mutable_status()->set_address(workers_["w1"].address);
  hb.mutable_status()->set_model("smol");
  v1::HeartbeatResponse hresp;
  ASSERT_TRUE(reg_->Heartbeat(Ctx().get(), hb, &hresp).ok());
  EXPECT_TRUE(hresp.reregister());
  Register("w1", workers_["w1"].address, "smol", 1000);
  ASSERT_TRUE(reg_->Heartbeat(Ctx().get(), hb, &hresp).ok());
  EXPECT_FALSE(hresp.reregister());
  ASSERT_TRUE(client_->GetSession(Ctx().get(), sreq, &got).ok());
  EXPECT_EQ(got.state(), "hot");
  Turn next = Chat(info.session_id(), "de");
  ASSERT_TRUE(next.status.ok());
  EXPECT_EQ(next.events.back().done().turn(), 2u);
  v1::ListWorkersResponse workers;
  ASSERT_TRUE(admin_->ListWorkers(Ctx().get(), v1::ListWorkersRequest(), &workers).ok());
  EXPECT_EQ(workers.workers(0).sessions(), 1);  // seeded from the journal
}

}  // namespace
}  // namespace rsd::router
