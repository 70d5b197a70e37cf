// The router's services in-process (real gRPC on localhost, port 0) against fake workers
// (fake_worker.h), with a fake clock for heartbeats: the fixture of router_service_test.cc and
// migration_test.cc.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "router/grpc_worker_client.h"
#include "router/router_service.h"
#include "tests/router/fake_worker_service.h"
#include "tests/support/test_util.h"

namespace rsd::router::testing {

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
  std::unique_ptr<FakeWorkerService> grpc_service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
  std::string model;
  std::string fingerprint;
  int64_t hot_free = 0;
};

class RouterServiceTest : public ::testing::Test {
 public:
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

  // Short waits for dead or unreachable owners, so tests of them stay fast.
  static RouterOptions TestOptions() {
    RouterOptions o;
    o.owner_wait = absl::Milliseconds(500);
    o.retry_interval = absl::Milliseconds(20);
    o.failover_scan_interval = absl::Milliseconds(20);
    o.move_timeout = absl::Seconds(10);
    return o;
  }

  void StartRouter() {
    absl::StatusOr<std::unique_ptr<Journal>> j = Journal::Open(dir_ + "/journal");
    ASSERT_TRUE(j.ok()) << j.status();
    journal_ = std::move(*j);
    registry_ = std::make_unique<Registry>(&clock_, absl::Seconds(5));
    core_ = std::make_unique<RouterCore>(journal_.get(), registry_.get(), &worker_clients_,
                                         TestOptions());
    ASSERT_TRUE(core_->LoadJournal().ok());
    keys_ = std::make_unique<KeyStore>(journal_->rocks());
    absl::StatusOr<std::unique_ptr<AuditLog>> audit = AuditLog::Open(dir_ + "/audit.log");
    ASSERT_TRUE(audit.ok()) << audit.status();
    audit_ = std::move(*audit);
    gate_ = std::make_unique<Gatekeeper>(keys_.get(), auth_, audit_.get());
    client_service_ = std::make_unique<ClientService>(core_.get(), gate_.get());
    admin_service_ = std::make_unique<AdminService>(core_.get(), gate_.get());
    registry_service_ = std::make_unique<RegistryService>(core_.get(), gate_.get());
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
    gate_.reset();
    audit_.reset();
    keys_.reset();
    registry_.reset();
    journal_.reset();
  }

  FakeWorker& AddWorker(const std::string& id, const std::string& model = "smol",
                        int64_t hot_free = 1000, const std::string& fingerprint = "fp-smol") {
    WorkerServer w;
    w.service = std::make_unique<FakeWorker>(id);
    w.grpc_service = std::make_unique<FakeWorkerService>(w.service.get());
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(w.grpc_service.get());
    w.server = b.BuildAndStart();
    w.address = "127.0.0.1:" + std::to_string(port);
    w.service->model_fingerprint = fingerprint;
    w.model = model;
    w.fingerprint = fingerprint;
    w.hot_free = hot_free;
    Register(id, w.address, model, hot_free, fingerprint);
    FakeWorker& ref = *w.service;
    workers_[id] = std::move(w);
    return ref;
  }

  static v1::WorkerStatus StatusOf(const std::string& id, const std::string& address,
                                   const std::string& model, int64_t hot_free,
                                   const std::string& fingerprint) {
    v1::WorkerStatus st;
    st.set_id(id);
    st.set_address(address);
    st.set_model(model);
    st.set_model_fingerprint(fingerprint);
    st.set_context_length(2048);
    st.mutable_load()->set_hot_bytes_free(hot_free);
    st.set_serving(true);
    return st;
  }

  v1::RegisterResponse Register(const std::string& id, const std::string& address,
                                const std::string& model, int64_t hot_free,
                                const std::string& fingerprint = "fp-smol",
                                const std::vector<v1::SessionRef>& sessions = {}) {
    grpc::ClientContext ctx;
    if (!registry_bearer_.empty()) ctx.AddMetadata("authorization", registry_bearer_);
    v1::RegisterRequest req;
    *req.mutable_status() = StatusOf(id, address, model, hot_free, fingerprint);
    for (const v1::SessionRef& r : sessions) *req.add_sessions() = r;
    v1::RegisterResponse resp;
    grpc::Status s = reg_->Register(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_DOUBLE_EQ(resp.heartbeat_interval_seconds(), 1.0);
    return resp;
  }

  // A heartbeat from a worker added with AddWorker; returns `reregister`.
  bool Heartbeat(const std::string& id) {
    const WorkerServer& w = workers_.at(id);
    grpc::ClientContext ctx;
    if (!registry_bearer_.empty()) ctx.AddMetadata("authorization", registry_bearer_);
    v1::HeartbeatRequest req;
    *req.mutable_status() = StatusOf(id, w.address, w.model, w.hot_free, w.fingerprint);
    v1::HeartbeatResponse resp;
    EXPECT_TRUE(reg_->Heartbeat(&ctx, req, &resp).ok());
    return resp.reregister();
  }

  SessionRecord Journaled(const std::string& session) {
    absl::StatusOr<SessionRecord> r = journal_->GetSession(*ParseSessionId(session));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : SessionRecord();
  }

  // A session created on worker `on` (the others cordoned meanwhile).
  std::string CreateOn(const std::string& on) {
    for (auto& [id, w] : workers_) {
      if (id != on) registry_->SetCordoned(id, true).IgnoreError();
    }
    v1::SessionInfo info;
    grpc::Status s = Create(&info);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(info.worker(), on);
    for (auto& [id, w] : workers_) {
      if (id != on) registry_->SetCordoned(id, false).IgnoreError();
    }
    return info.session_id();
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
  GrpcWorkerClients worker_clients_{16 << 20};
  std::unique_ptr<RouterCore> core_;
  bool auth_ = false;            // API keys checked (set before StartRouter)
  std::string registry_bearer_;  // sent by Register and Heartbeat when non-empty
  std::unique_ptr<KeyStore> keys_;
  std::unique_ptr<AuditLog> audit_;
  std::unique_ptr<Gatekeeper> gate_;
  std::unique_ptr<ClientService> client_service_;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<RegistryService> registry_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Client::Stub> client_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::unique_ptr<v1::Registry::Stub> reg_;
  std::map<std::string, WorkerServer> workers_;
};

}  // namespace rsd::router::testing
