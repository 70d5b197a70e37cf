// The worker's gRPC layer on its own: two workers in this process (engine, session manager,
// scheduler on its own thread, WorkerService, a real gRPC server on localhost) over a synthetic
// model, called through the generated stub as the router calls them. Session calls and their
// fencing (epoch, tenant), the turn's stream, validation errors that name the problem, and
// SendSession: a session sent worker to worker continues with exactly the tokens it would have
// produced where it was, and a target that cannot be reached is UNAVAILABLE naming it while the
// source keeps serving.
#include "worker/service/worker_service.h"

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/state_stream.h"
#include "storage/common/ids.h"
#include "storage/testing/sst_damage.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"

namespace rsd {
namespace {

using ::testing::HasSubstr;

// One worker in process, served on 127.0.0.1 (port chosen by the system).
class InProcessWorker {
 public:
  // `data_dir` "": a new temporary directory (a restart passes the previous one).
  absl::Status Start(const std::string& id, const std::string& model_path,
                     const std::string& data_dir = "") {
    EngineOptions eo;
    eo.model_path = model_path;
    eo.block_tokens = 4;
    eo.keep_residuals = true;
    eo.threads = 1;
    absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(eo);
    if (!engine.ok()) return engine.status();
    engine_ = std::move(*engine);
    SessionManagerOptions so;
    data_dir_ = data_dir.empty() ? testing::MakeTempDir("rsd-service-" + id) + "/db" : data_dir;
    so.data_dir = data_dir_;
    absl::StatusOr<std::unique_ptr<SessionManager>> sessions =
        SessionManager::Create(engine_.get(), so);
    if (!sessions.ok()) return sessions.status();
    sessions_ = std::move(*sessions);
    scheduler_ = std::make_unique<Scheduler>(engine_.get(), sessions_.get(), SchedulerOptions{});
    WorkerServiceOptions wo;
    wo.id = id;
    wo.model_name = "synthetic";
    service_ =
        std::make_unique<WorkerService>(engine_.get(), sessions_.get(), scheduler_.get(), wo);
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(service_.get());
    server_ = b.BuildAndStart();
    if (server_ == nullptr || port == 0) return absl::InternalError("cannot listen");
    address_ = "127.0.0.1:" + std::to_string(port);
    stub_ = v1::Worker::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
    return absl::OkStatus();
  }
  ~InProcessWorker() { Stop(); }
  // Everything down, in order; the data dir stays.
  void Stop() {
    if (server_) server_->Shutdown();
    server_.reset();
    service_.reset();
    scheduler_.reset();
    sessions_.reset();
    engine_.reset();
  }
  v1::Worker::Stub& stub() { return *stub_; }
  SessionManager& sessions() { return *sessions_; }
  WorkerService& service() { return *service_; }
  const std::string& data_dir() const { return data_dir_; }
  const std::string& address() const { return address_; }

 private:
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<SessionManager> sessions_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<WorkerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Worker::Stub> stub_;
  std::string address_;
  std::string data_dir_;
};

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return ctx;
}

v1::SessionRef Ref(const std::string& id, uint64_t epoch, const std::string& tenant = "t") {
  v1::SessionRef ref;
  ref.set_session_id(id);
  ref.set_epoch(epoch);
  ref.set_tenant(tenant);
  return ref;
}

struct Turn {
  grpc::Status status;
  std::vector<int32_t> streamed;
  v1::TurnDone done;
};

Turn RunTurn(v1::Worker::Stub& stub, const v1::SessionRef& ref, const std::string& message) {
  v1::WorkerChatRequest req;
  *req.mutable_ref() = ref;
  req.mutable_turn()->set_session_id(ref.session_id());
  req.mutable_turn()->set_message(message);
  req.mutable_turn()->set_max_tokens(8);
  Turn t;
  auto ctx = Ctx();
  auto reader = stub.Chat(ctx.get(), req);
  v1::ChatEvent ev;
  while (reader->Read(&ev)) {
    if (ev.has_delta()) {
      EXPECT_EQ(ev.delta().offset(), static_cast<int64_t>(t.streamed.size()));
      t.streamed.insert(t.streamed.end(), ev.delta().tokens().begin(), ev.delta().tokens().end());
    }
    if (ev.has_done()) t.done = ev.done();
  }
  t.status = reader->Finish();
  return t;
}

class WorkerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* entry = testing::FindSyntheticModel("gqa");
    ASSERT_NE(entry, nullptr);
    testing::SyntheticModel model(entry->options);
    model_ = testing::MakeTempDir("rsd-service-model") + "/gqa.gguf";
    ASSERT_TRUE(model.WriteGguf(model_).ok());
    for (auto* w : {&w1_, &w2_}) {
      const absl::Status s = w->Start(w == &w1_ ? "w1" : "w2", model_);
      ASSERT_TRUE(s.ok()) << s;
    }
  }

  grpc::Status Open(InProcessWorker& w, const v1::SessionRef& ref) {
    v1::OpenSessionRequest req;
    *req.mutable_ref() = ref;
    req.set_model("synthetic");
    v1::SessionInfo info;
    return w.stub().OpenSession(Ctx().get(), req, &info);
  }

  // The messages of w's ExportSession of `ref` in `form` for `target_epoch` (empty on failure).
  std::vector<v1::StateChunk> Export(InProcessWorker& w, const v1::SessionRef& ref,
                                     const std::string& form, uint64_t target_epoch) {
    v1::ExportSessionRequest exp;
    *exp.mutable_ref() = ref;
    exp.set_form(form);
    exp.set_target_epoch(target_epoch);
    auto ctx = Ctx();
    auto reader = w.stub().ExportSession(ctx.get(), exp);
    std::vector<v1::StateChunk> chunks;
    for (v1::StateChunk c; reader->Read(&c);) chunks.push_back(c);
    const grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    return s.ok() ? chunks : std::vector<v1::StateChunk>();
  }

  std::string model_;
  InProcessWorker w1_, w2_;
};

TEST_F(WorkerServiceTest, SessionCallsTurnStreamAndFencing) {
  const std::string id = SessionId::Random().ToHex();
  ASSERT_TRUE(Open(w1_, Ref(id, 1)).ok());
  ASSERT_TRUE(Open(w1_, Ref(id, 1)).ok()) << "opening again at the same epoch is idempotent";
  Turn t = RunTurn(w1_.stub(), Ref(id, 1), "hello there");
  ASSERT_TRUE(t.status.ok()) << t.status.error_message();
  EXPECT_EQ(t.done.turn(), 1u);
  EXPECT_EQ(t.done.worker(), "w1");
  EXPECT_EQ(std::vector<int32_t>(t.done.tokens().begin(), t.done.tokens().end()), t.streamed);
  EXPECT_FALSE(t.done.log_tokens().empty());

  v1::SessionInfo info;
  ASSERT_TRUE(w1_.stub().DescribeSession(Ctx().get(), Ref(id, 1), &info).ok());
  EXPECT_EQ(info.turns(), 1u);
  EXPECT_EQ(info.token_count(), t.done.usage().history_tokens());

  // Another epoch is a stale owner; another tenant does not see the session at all.
  Turn stale = RunTurn(w1_.stub(), Ref(id, 2), "x");
  EXPECT_EQ(stale.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(stale.status.error_message(), HasSubstr("stale owner"));
  Turn other = RunTurn(w1_.stub(), Ref(id, 1, "someone-else"), "x");
  EXPECT_EQ(other.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(other.status.error_message(), HasSubstr("unknown session " + id));

  // Bad turns are refused naming the problem, and change nothing.
  EXPECT_THAT(RunTurn(w1_.stub(), Ref(id, 1), "").status.error_message(), HasSubstr("empty"));
  EXPECT_THAT(RunTurn(w1_.stub(), Ref(id, 1), std::string("\xff\xfe", 2)).status.error_message(),
              HasSubstr("not valid UTF-8"));
  ASSERT_TRUE(w1_.stub().DescribeSession(Ctx().get(), Ref(id, 1), &info).ok());
  EXPECT_EQ(info.turns(), 1u);

  ASSERT_TRUE(w1_.stub().UndoTurn(Ctx().get(), Ref(id, 1), &info).ok());
  EXPECT_EQ(info.turns(), 0u);
  ASSERT_TRUE(w1_.stub().CloseSession(Ctx().get(), Ref(id, 1), &info).ok());
  EXPECT_EQ(w1_.stub().DescribeSession(Ctx().get(), Ref(id, 1), &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(WorkerServiceTest, SendSessionMovesTheSessionWorkerToWorkerExactly) {
  const std::vector<std::string> script = {"one", "two more", "and three"};
  for (const char* form : {"residual", "kv", "tokens"}) {
    SCOPED_TRACE(form);
    // The reference: the same script on w1, never moved.
    const std::string stay = SessionId::Random().ToHex();
    ASSERT_TRUE(Open(w1_, Ref(stay, 1)).ok());
    std::vector<std::vector<int32_t>> ref;
    for (const std::string& m : script) {
      Turn t = RunTurn(w1_.stub(), Ref(stay, 1), m);
      ASSERT_TRUE(t.status.ok()) << t.status.error_message();
      ref.push_back(t.streamed);
    }

    const std::string id = SessionId::Random().ToHex();
    ASSERT_TRUE(Open(w1_, Ref(id, 1)).ok());
    for (size_t i = 0; i < 2; ++i)
      ASSERT_TRUE(RunTurn(w1_.stub(), Ref(id, 1), script[i]).status.ok());
    v1::SendSessionRequest send;
    *send.mutable_source()->mutable_ref() = Ref(id, 1);
    send.mutable_source()->set_form(form);
    send.mutable_source()->set_target_epoch(2);
    send.set_target_address(w2_.address());
    send.set_target_worker("w2");
    v1::ImportSessionResponse imported;
    grpc::Status s = w1_.stub().SendSession(Ctx().get(), send, &imported);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(imported.session().turns(), 2u);
    // A token log whose leading chunks a session on w2 holds (an earlier round moved the same
    // script there) starts from their checkpoints there: it restores from those ("auto").
    const bool seeded = std::string(form) == "tokens" && imported.shared_tokens() > 0;
    EXPECT_EQ(imported.form(), seeded ? "auto" : form);
    EXPECT_GT(imported.wire_bytes(), 0);

    Turn third = RunTurn(w2_.stub(), Ref(id, 2), script[2]);
    ASSERT_TRUE(third.status.ok()) << third.status.error_message();
    EXPECT_EQ(third.done.worker(), "w2");
    EXPECT_EQ(third.done.turn(), 3u);
    EXPECT_EQ(third.streamed, ref[2]) << "the moved session diverged from the one that stayed";
  }
}

// Issue #13: a hostile import (a log of 400,000 empty turns, one longer than the context, a
// negative chunk count) is refused at its header, nothing of it is kept, and the worker goes on
// serving its sessions.
TEST_F(WorkerServiceTest, HostileImportsAreRefusedAtTheirHeaderAndOthersKeepBeingServed) {
  const std::string id = SessionId::Random().ToHex();
  ASSERT_TRUE(Open(w1_, Ref(id, 1)).ok());
  ASSERT_TRUE(RunTurn(w1_.stub(), Ref(id, 1), "one").status.ok());
  const std::string hostile = SessionId::Random().ToHex();
  const auto import = [&](const std::function<void(v1::StateHeader*)>& fill) {
    v1::StateChunk chunk;
    v1::StateHeader* h = chunk.mutable_header();
    h->set_version(1);
    *h->mutable_ref() = Ref(hostile, 1);
    h->set_form("tokens");
    fill(h);
    v1::ImportSessionResponse out;
    auto ctx = Ctx();
    auto writer = w1_.stub().ImportSession(ctx.get(), &out);
    writer->Write(chunk);
    writer->WritesDone();
    return writer->Finish();
  };
  grpc::Status s = import([](v1::StateHeader* h) {
    for (int i = 0; i < 400000; ++i) h->add_turn_ends(0);
  });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("400000 turns in a log of 0 tokens"));
  s = import([](v1::StateHeader* h) {
    for (int i = 0; i < 1 << 20; ++i) h->add_tokens(1);
    h->add_turn_ends(1 << 20);
  });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("tokens is longer than the context here"));
  s = import([](v1::StateHeader* h) {
    h->add_tokens(1);
    h->add_turn_ends(1);
    h->set_n_chunks(-3);
  });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("-3 chunks"));
  v1::SessionInfo info;
  EXPECT_EQ(w1_.stub().DescribeSession(Ctx().get(), Ref(hostile, 1), &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
  Turn next = RunTurn(w1_.stub(), Ref(id, 1), "two");
  ASSERT_TRUE(next.status.ok()) << next.status.error_message();
  EXPECT_EQ(next.done.turn(), 2u);
}

// Issue #14: a damaged table block in a stopped worker's store costs only the session whose keys
// it holds: the worker starts, salvages the rest (they continue exactly), sets the damaged files
// aside and reports the damaged session until it is imported again.
TEST_F(WorkerServiceTest, ADamagedStoreBlockQuarantinesOnlyItsSession) {
  const std::vector<std::string> ids = {SessionId::Random().ToHex(), SessionId::Random().ToHex(),
                                        SessionId::Random().ToHex()};
  std::vector<std::vector<int32_t>> reference;  // the same two turns on w2, never damaged
  for (const std::string& id : ids) {
    ASSERT_TRUE(Open(w1_, Ref(id, 1)).ok());
    ASSERT_TRUE(RunTurn(w1_.stub(), Ref(id, 1), "one " + id.substr(0, 4)).status.ok());
    ASSERT_TRUE(w1_.sessions().cold_for_test()->Flush().ok());  // a table file per session
    const std::string twin = SessionId::Random().ToHex();
    ASSERT_TRUE(Open(w2_, Ref(twin, 1)).ok());
    ASSERT_TRUE(RunTurn(w2_.stub(), Ref(twin, 1), "one " + id.substr(0, 4)).status.ok());
    reference.push_back(RunTurn(w2_.stub(), Ref(twin, 1), "two").streamed);
  }
  const std::string dir = w1_.data_dir();
  w1_.Stop();
  absl::StatusOr<std::vector<std::string>> files = testing::SstFilesOfFamily(dir, "tokens");
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->size(), 3u);
  ASSERT_TRUE(testing::FlipByte((*files)[1], 5).ok());

  const absl::Status restarted = w1_.Start("w1", model_, dir);
  ASSERT_TRUE(restarted.ok()) << restarted;
  const v1::WorkerStatus status = w1_.service().Status();
  ASSERT_EQ(status.quarantined_size(), 1) << status.DebugString();
  EXPECT_EQ(status.quarantined(0).session_id(), ids[1]);
  EXPECT_EQ(status.quarantined(0).tenant(), "t");
  EXPECT_EQ(status.quarantined(0).epoch(), 1u);
  v1::SessionInfo info;
  EXPECT_EQ(w1_.stub().DescribeSession(Ctx().get(), Ref(ids[1], 1), &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
  for (int i : {0, 2}) {
    Turn t = RunTurn(w1_.stub(), Ref(ids[i], 1), "two");
    ASSERT_TRUE(t.status.ok()) << t.status.error_message();
    EXPECT_EQ(t.done.turn(), 2u);
    EXPECT_EQ(t.streamed, reference[i]) << "a salvaged session diverged";
  }
  bool aside = false;
  for (const auto& e :
       std::filesystem::directory_iterator(std::filesystem::path(dir).parent_path())) {
    aside = aside || e.path().filename().string().rfind("db.damaged-", 0) == 0;
  }
  EXPECT_TRUE(aside) << "the damaged files were not kept";

  // The router's rebuild (a token-only import at the next epoch) ends the quarantine.
  std::vector<v1::StateChunk> chunks = Export(w1_, Ref(ids[0], 1), "tokens", 1);
  ASSERT_FALSE(chunks.empty());
  // Session 0's log stands in for the journal's: imported under the quarantined id, epoch 2.
  StateStreamReader decode;
  for (v1::StateChunk& c : chunks) ASSERT_TRUE(decode.Add(std::move(c)).ok());
  absl::StatusOr<SessionState> state = decode.Finish();
  ASSERT_TRUE(state.ok()) << state.status();
  state->id = *ParseSessionId(ids[1]);
  v1::ImportSessionResponse imported;
  auto ictx = Ctx();
  auto writer = w1_.stub().ImportSession(ictx.get(), &imported);
  ASSERT_TRUE(WriteStateStream(*std::move(state), 2, [&](const v1::StateChunk& c) {
                return writer->Write(c);
              }).ok());
  writer->WritesDone();
  const grpc::Status done = writer->Finish();
  ASSERT_TRUE(done.ok()) << done.error_message();
  EXPECT_EQ(w1_.service().Status().quarantined_size(), 0);
  Turn back = RunTurn(w1_.stub(), Ref(ids[1], 2), "three");
  ASSERT_TRUE(back.status.ok()) << back.status.error_message();
  EXPECT_EQ(back.done.turn(), 3u);  // the imported log's two turns, then this one
}

// Issue #14: an import whose sender sent every chunk and then went away (cancelled, as a killed
// source's stream ends) without ending the stream is refused, and nothing of it is kept: a read
// ends the same way for both, only the context tells them apart.
TEST_F(WorkerServiceTest, AnImportWhoseSenderWentAwayBeforeEndingItKeepsNothing) {
  const std::string id = SessionId::Random().ToHex();
  ASSERT_TRUE(Open(w1_, Ref(id, 1)).ok());
  ASSERT_TRUE(RunTurn(w1_.stub(), Ref(id, 1), "one").status.ok());
  const std::vector<v1::StateChunk> chunks = Export(w1_, Ref(id, 1), "kv", 2);
  ASSERT_GE(chunks.size(), 2u);
  v1::ImportSessionResponse out;
  auto ictx = Ctx();
  auto writer = w2_.stub().ImportSession(ictx.get(), &out);
  for (const v1::StateChunk& c : chunks) ASSERT_TRUE(writer->Write(c));
  ictx->TryCancel();  // every chunk written, the stream never ended
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  for (int i = 0; i < 1000 && w2_.service().imports_cut() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(w2_.service().imports_cut(), 1) << "the import was not refused";
  v1::SessionInfo info;
  EXPECT_EQ(w2_.stub().DescribeSession(Ctx().get(), Ref(id, 2), &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // The whole stream, ended, is taken.
  auto jctx = Ctx();
  writer = w2_.stub().ImportSession(jctx.get(), &out);
  for (const v1::StateChunk& c : chunks) ASSERT_TRUE(writer->Write(c));
  writer->WritesDone();
  const grpc::Status whole = writer->Finish();
  ASSERT_TRUE(whole.ok()) << whole.error_message();
  EXPECT_EQ(out.session().turns(), 1u);
}

TEST_F(WorkerServiceTest, SendSessionToAnUnreachableTargetIsUnavailableAndTheSourceKeepsServing) {
  const std::string id = SessionId::Random().ToHex();
  ASSERT_TRUE(Open(w1_, Ref(id, 1)).ok());
  ASSERT_TRUE(RunTurn(w1_.stub(), Ref(id, 1), "one").status.ok());
  v1::SendSessionRequest send;
  *send.mutable_source()->mutable_ref() = Ref(id, 1);
  send.mutable_source()->set_target_epoch(2);
  send.set_target_address("127.0.0.1:1");  // nothing listens there
  send.set_target_worker("w9");
  v1::ImportSessionResponse imported;
  grpc::Status s = w1_.stub().SendSession(Ctx().get(), send, &imported);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(s.error_message(),
              HasSubstr("worker 'w1' cannot reach target worker 'w9' at 127.0.0.1:1"));
  Turn next = RunTurn(w1_.stub(), Ref(id, 1), "two");
  ASSERT_TRUE(next.status.ok()) << next.status.error_message();
  EXPECT_EQ(next.done.turn(), 2u);

  // No target, or this worker itself: refused before anything is exported.
  send.set_target_address("");
  s = w1_.stub().SendSession(Ctx().get(), send, &imported);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("target worker's address"));
  send.set_target_address(w1_.address());
  send.set_target_worker("w1");
  s = w1_.stub().SendSession(Ctx().get(), send, &imported);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("cannot send a session to itself"));
  EXPECT_TRUE(RunTurn(w1_.stub(), Ref(id, 1), "three").status.ok());

  // A target that refuses (a stale epoch: not newer than its own copy) is that refusal, named.
  const std::string copy = SessionId::Random().ToHex();
  ASSERT_TRUE(Open(w1_, Ref(copy, 1)).ok());
  ASSERT_TRUE(Open(w2_, Ref(copy, 5)).ok());
  *send.mutable_source()->mutable_ref() = Ref(copy, 1);
  send.set_target_address(w2_.address());
  send.set_target_worker("w2");
  s = w1_.stub().SendSession(Ctx().get(), send, &imported);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("target worker 'w2' at " + w2_.address()));
}

}  // namespace
}  // namespace rsd
