// The router's gRPC services in-process against fake workers (real gRPC on localhost, port 0):
// create/chat/describe/undo/close, turn-id replay, journal-before-TurnDone, worker errors passed
// through, tenants, dead and unreachable owners, deadline propagation, router restart.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "router/router_service.h"
#include "tests/router/fake_worker.h"
#include "tests/support/test_util.h"

namespace rsd::router {
namespace {

using ::rsd::router::testing::FakeWorker;
using ::testing::HasSubstr;

class FakeClock final : public Clock {
 public:
  absl::Time Now() override {
    absl::MutexLock l(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock l(&mu_);
    now_ += d;
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1700000000);
};

struct WorkerServer {
  std::unique_ptr<FakeWorker> service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

class RouterServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = rsd::testing::MakeTempDir("router_service_test");
    StartRouter();
  }
  void TearDown() override {
    StopRouter();
    for (auto& [id, w] : workers_) w.server->Shutdown();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void StartRouter() {
    absl::StatusOr<std::unique_ptr<Journal>> j = Journal::Open(dir_ + "/journal");
    ASSERT_TRUE(j.ok()) << j.status();
    journal_ = std::move(*j);
    registry_ = std::make_unique<Registry>(&clock_, absl::Seconds(5));
    core_ = std::make_unique<RouterCore>(journal_.get(), registry_.get(), RouterOptions());
    ASSERT_TRUE(core_->LoadJournal().ok());
    client_service_ = std::make_unique<ClientService>(core_.get());
    admin_service_ = std::make_unique<AdminService>(core_.get());
    registry_service_ = std::make_unique<RegistryService>(core_.get());
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(client_service_.get());
    b.RegisterService(admin_service_.get());
    b.RegisterService(registry_service_.get());
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                       grpc::InsecureChannelCredentials());
    client_ = v1::Client::NewStub(channel);
    admin_ = v1::Admin::NewStub(channel);
    reg_ = v1::Registry::NewStub(channel);
  }

  void StopRouter() {
    if (server_) server_->Shutdown();
    server_.reset();
    core_.reset();
    registry_.reset();
    journal_.reset();
  }

  FakeWorker& AddWorker(const std::string& id, const std::string& model = "smol",
                        int64_t hot_free = 1000) {
    WorkerServer w;
    w.service = std::make_unique<FakeWorker>(id);
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(w.service.get());
    w.server = b.BuildAndStart();
    w.address = "127.0.0.1:" + std::to_string(port);
    Register(id, w.address, model, hot_free);
    FakeWorker& ref = *w.service;
    workers_[id] = std::move(w);
    return ref;
  }

  void Register(const std::string& id, const std::string& address, const std::string& model,
                int64_t hot_free) {
    grpc::ClientContext ctx;
    v1::RegisterRequest req;
    req.mutable_status()->set_id(id);
    req.mutable_status()->set_address(address);
    req.mutable_status()->set_model(model);
    req.mutable_status()->set_context_length(2048);
    req.mutable_status()->mutable_load()->set_hot_bytes_free(hot_free);
    v1::RegisterResponse resp;
    ASSERT_TRUE(reg_->Register(&ctx, req, &resp).ok());
    EXPECT_DOUBLE_EQ(resp.heartbeat_interval_seconds(), 1.0);
  }

  static std::unique_ptr<grpc::ClientContext> Ctx(const std::string& tenant = "") {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!tenant.empty()) ctx->AddMetadata("x-rsd-tenant", tenant);
    return ctx;
  }

  grpc::Status Create(v1::SessionInfo* info, const std::string& model = "",
                      const std::string& tenant = "") {
    v1::CreateSessionRequest req;
    req.set_model(model);
    req.mutable_options()->set_priority(3);
    return client_->CreateSession(Ctx(tenant).get(), req, info);
  }

  struct Turn {
    grpc::Status status;
    std::vector<v1::ChatEvent> events;
    bool journaled_before_done = false;
  };
  Turn Chat(const std::string& session, const std::string& message, const std::string& turn_id = "",
            const std::string& tenant = "", std::unique_ptr<grpc::ClientContext> ctx = nullptr) {
    if (!ctx) ctx = Ctx(tenant);
    v1::TurnRequest req;
    req.set_session_id(session);
    req.set_message(message);
    req.set_turn_id(turn_id);
    Turn t;
    auto reader = client_->Chat(ctx.get(), req);
    v1::ChatEvent ev;
    while (reader->Read(&ev)) {
      if (ev.has_done() && !ev.done().replayed()) {
        // TurnDone arrives only once the journal holds the turn.
        absl::StatusOr<std::optional<TurnRecord>> last =
            journal_->LastTurn(*ParseSessionId(session));
        t.journaled_before_done = last.ok() && last->has_value() &&
                                  (*last)->turn == ev.done().turn();
      }
      t.events.push_back(ev);
    }
    t.status = reader->Finish();
    return t;
  }

  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<Journal> journal_;
  std::unique_ptr<Registry> registry_;
  std::unique_ptr<RouterCore> core_;
  std::unique_ptr<ClientService> client_service_;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<RegistryService> registry_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Client::Stub> client_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::unique_ptr<v1::Registry::Stub> reg_;
  std::map<std::string, WorkerServer> workers_;
};

TEST_F(RouterServiceTest, CreateChatDescribeUndoClose) {
  FakeWorker& w = AddWorker("w1");
  v1::SessionInfo info;
  ASSERT_TRUE(Create(&info).ok());
  EXPECT_EQ(info.worker(), "w1");
  EXPECT_EQ(info.epoch(), 1u);
  EXPECT_EQ(info.tenant(), "default");
  EXPECT_EQ(info.model(), "smol");
  EXPECT_EQ(info.options().priority(), 3);
  ASSERT_EQ(w.opened.size(), 1u);
  EXPECT_EQ(w.opened[0].ref().session_id(), info.session_id());
  EXPECT_EQ(w.opened[0].ref().tenant(), "default");
  EXPECT_EQ(w.opened[0].ref().epoch(), 1u);
  EXPECT_EQ(w.opened[0].options().priority(), 3);

  Turn t = Chat(info.session_id(), "hey");
  ASSERT_TRUE(t.status.ok()) << t.status.error_message();
  ASSERT_EQ(t.events.size(), 4u);  // three deltas and the TurnDone
  EXPECT_EQ(t.events[1].delta().text(), "e");
  const v1::TurnDone& done = t.events[3].done();
  EXPECT_EQ(done.turn(), 1u);
  EXPECT_EQ(done.worker(), "w1");
  EXPECT_TRUE(t.journaled_before_done);
  // The router drew a seed and the journal recorded the one the worker ran with.
  ASSERT_EQ(w.chats.size(), 1u);
  ASSERT_TRUE(w.chats[0].turn().sampling().has_seed());
  EXPECT_EQ(w.chats[0].ref().epoch(), 1u);
  const TurnRecord rec = **journal_->LastTurn(*ParseSessionId(info.session_id()));
  EXPECT_EQ(rec.seed, w.chats[0].turn().sampling().seed());
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
  EXPECT_EQ(w.closed.size(), 1u);
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
    w.fail = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full (8 turns waiting)");
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
  v1::MigrateRequest mreq;
  EXPECT_EQ(admin_->Migrate(Ctx().get(), mreq, &c).error_code(), grpc::StatusCode::UNIMPLEMENTED);
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
