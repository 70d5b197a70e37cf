// API keys and the audit log (issue #13) through the router's real gRPC services in-process with
// --auth's gatekeeper: every refusal has its exact code and changes nothing; another tenant's
// session is indistinguishable from one that never existed; keys are stored hashed.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "router/api_keys.h"
#include "storage/common/tls.h"
#include "tests/router/router_test_fixture.h"

namespace rsd::router {
namespace {

using ::rsd::router::testing::FakeWorker;
using ::rsd::router::testing::RouterServiceTest;
using ::testing::HasSubstr;

class AuthTest : public RouterServiceTest {
 public:
  void SetUp() override {
    auth_ = true;
    RouterServiceTest::SetUp();
    admin_key_ = NewKey("ops", Role::kAdmin);
    worker_key_ = NewKey("", Role::kWorker);
    registry_bearer_ = "Bearer " + worker_key_;
  }

  std::string NewKey(const std::string& tenant, Role role) {
    absl::StatusOr<std::string> k = keys_->Create(tenant, role, nullptr);
    EXPECT_TRUE(k.ok()) << k.status();
    return k.ok() ? *k : "";
  }

  static std::unique_ptr<grpc::ClientContext> With(const std::string& key,
                                                   const std::string& tenant_header = "") {
    auto ctx = Ctx(tenant_header);
    if (!key.empty()) ctx->AddMetadata("authorization", "Bearer " + key);
    return ctx;
  }

  grpc::Status CreateAs(const std::string& key, v1::SessionInfo* info) {
    return client_->CreateSession(With(key).get(), v1::CreateSessionRequest(), info);
  }

  grpc::Status ChatAs(const std::string& key, const std::string& session,
                      const std::string& tenant_header = "") {
    v1::TurnRequest req;
    req.set_session_id(session);
    req.set_message("hi");
    auto ctx = With(key, tenant_header);
    auto reader = client_->Chat(ctx.get(), req);
    v1::ChatEvent ev;
    while (reader->Read(&ev)) {
    }
    return reader->Finish();
  }

  std::vector<nlohmann::json> AuditLines() {
    std::ifstream in(dir_ + "/audit.log");
    std::vector<nlohmann::json> out;
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  }

  std::string admin_key_;
  std::string worker_key_;
};

TEST_F(AuthTest, NoKeyOrABadKeyIsUnauthenticated) {
  AddWorker("w1");
  const std::string revoked = NewKey("acme", Role::kTenant);
  const std::string revoked_id = revoked.substr(4, 16);
  ASSERT_TRUE(keys_->Revoke(revoked_id).ok());
  std::string forged = NewKey("acme", Role::kTenant);
  forged.back() = forged.back() == '0' ? '1' : '0';  // right id, wrong secret
  for (const std::string& key : {std::string(), std::string("nonsense"), forged, revoked}) {
    SCOPED_TRACE(key);
    v1::SessionInfo info;
    grpc::Status s = CreateAs(key, &info);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    if (key.empty()) {
      EXPECT_THAT(s.error_message(), HasSubstr("missing API key"));
    } else if (key == revoked) {
      EXPECT_EQ(s.error_message(), "revoked API key " + revoked_id);
    } else {
      EXPECT_EQ(s.error_message(), "invalid API key");
    }
    v1::ListModelsResponse models;
    EXPECT_EQ(client_->ListModels(With(key).get(), v1::ListModelsRequest(), &models).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    v1::ListWorkersResponse workers;
    EXPECT_EQ(admin_->ListWorkers(With(key).get(), v1::ListWorkersRequest(), &workers).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(workers.workers_size(), 0);
  }
  absl::StatusOr<std::vector<SessionRecord>> sessions = journal_->ListSessions();
  ASSERT_TRUE(sessions.ok());
  EXPECT_TRUE(sessions->empty());  // nothing was opened or journaled
  // The x-rsd-tenant header is no key.
  v1::SessionInfo info;
  EXPECT_EQ(
      client_->CreateSession(Ctx("acme").get(), v1::CreateSessionRequest(), &info).error_code(),
      grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(AuthTest, AnotherTenantsSessionIsIndistinguishableFromNone) {
  FakeWorker& w = AddWorker("w1");
  const std::string alice = NewKey("alice", Role::kTenant);
  const std::string bob = NewKey("bob", Role::kTenant);
  v1::SessionInfo info;
  ASSERT_TRUE(CreateAs(alice, &info).ok());
  EXPECT_EQ(info.tenant(), "alice");
  ASSERT_TRUE(ChatAs(alice, info.session_id()).ok());
  const std::string never = "00112233445566778899aabbccddeeff";
  // The refusal's message with the session id replaced by `never`'s.
  const auto same_as_never = [&](const grpc::Status& s) -> std::string {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    std::string msg = s.error_message();
    const size_t at = msg.find(info.session_id());
    if (at == std::string::npos) return "(no session id in) " + msg;
    return msg.replace(at, info.session_id().size(), never);
  };
  v1::SessionRequest req;
  req.set_session_id(never);
  v1::SessionInfo out;
  const grpc::Status none = client_->GetSession(With(bob).get(), req, &out);
  ASSERT_EQ(none.error_code(), grpc::StatusCode::NOT_FOUND);
  req.set_session_id(info.session_id());
  EXPECT_EQ(same_as_never(client_->GetSession(With(bob).get(), req, &out)), none.error_message());
  // Bob naming alice's tenant in the header changes nothing: the key decides.
  EXPECT_EQ(same_as_never(client_->GetSession(With(bob, "alice").get(), req, &out)),
            none.error_message());
  EXPECT_EQ(same_as_never(ChatAs(bob, info.session_id(), "alice")), none.error_message());
  v1::CloseSessionResponse closed;
  EXPECT_EQ(same_as_never(client_->CloseSession(With(bob).get(), req, &closed)),
            none.error_message());
  EXPECT_EQ(same_as_never(client_->UndoTurn(With(bob).get(), req, &out)), none.error_message());
  // Nothing changed: alice's session and its turn are there, on the worker too.
  EXPECT_TRUE(w.Has(info.session_id()));
  ASSERT_TRUE(client_->GetSession(With(alice).get(), req, &out).ok());
  EXPECT_EQ(out.turns(), 1u);
  EXPECT_TRUE(ChatAs(alice, info.session_id()).ok());
  // An admin key is a tenant of its own on the Client service, and sees everything on Admin.
  EXPECT_EQ(client_->GetSession(With(admin_key_).get(), req, &out).error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::DescribeSessionRequest d;
  d.set_session_id(info.session_id());
  ASSERT_TRUE(admin_->DescribeSession(With(admin_key_).get(), d, &out).ok());
  EXPECT_EQ(out.tenant(), "alice");
}

TEST_F(AuthTest, AdminNeedsAnAdminKeyAndEveryAttemptIsAudited) {
  AddWorker("w1");
  const std::string alice = NewKey("alice", Role::kTenant);
  const std::string alice_id = alice.substr(4, 16);
  v1::WorkerRequest w1;
  w1.set_worker("w1");
  v1::WorkerInfo winfo;
  v1::FailoverResponse failed_over;
  v1::ListSessionsResponse sessions;
  v1::CreateKeyRequest create;
  create.set_tenant("alice");
  create.set_role("admin");
  v1::CreateKeyResponse created;
  for (const std::string& key : {alice, worker_key_}) {
    EXPECT_EQ(admin_->Cordon(With(key).get(), w1, &winfo).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(admin_->Failover(With(key).get(), w1, &failed_over).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(
        admin_->ListSessions(With(key).get(), v1::ListSessionsRequest(), &sessions).error_code(),
        grpc::StatusCode::PERMISSION_DENIED);
    const grpc::Status s = admin_->CreateKey(With(key).get(), create, &created);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(s.error_message(), HasSubstr("needs an admin key"));
  }
  EXPECT_TRUE(created.key().empty());
  absl::StatusOr<WorkerSnapshot> snap = registry_->Get("w1");
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->state, WorkerState::kReady);  // neither cordoned nor failed over
  absl::StatusOr<std::vector<KeyRecord>> keys = keys_->List();
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys->size(), 3u);  // admin, worker, alice: no key was made
  // The admin key does them.
  ASSERT_TRUE(admin_->CreateKey(With(admin_key_).get(), create, &created).ok());
  EXPECT_EQ(created.info().role(), "admin");
  ASSERT_TRUE(admin_->Cordon(With(admin_key_).get(), w1, &winfo).ok());
  EXPECT_EQ(winfo.state(), "cordoned");
  v1::RevokeKeyRequest revoke;
  revoke.set_id(created.info().id());
  v1::KeyInfo revoked;
  ASSERT_TRUE(admin_->RevokeKey(With(admin_key_).get(), revoke, &revoked).ok());
  EXPECT_NE(revoked.revoked_unix_ms(), 0);
  v1::ListWorkersResponse workers;
  EXPECT_EQ(admin_->ListWorkers(With(created.key()).get(), v1::ListWorkersRequest(), &workers)
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Every attempt is in the audit log, in order, with who and the outcome; no secret is.
  const std::vector<nlohmann::json> lines = AuditLines();
  ASSERT_EQ(lines.size(), 12u);
  EXPECT_EQ(lines[0]["action"], "Cordon");
  EXPECT_EQ(lines[0]["key"], alice_id);
  EXPECT_EQ(lines[0]["tenant"], "alice");
  EXPECT_EQ(lines[0]["role"], "tenant");
  EXPECT_EQ(lines[0]["target"], "w1");
  EXPECT_EQ(lines[0]["code"], "PERMISSION_DENIED");
  EXPECT_EQ(lines[4]["role"], "worker");
  EXPECT_EQ(lines[8]["action"], "CreateKey");
  EXPECT_EQ(lines[8]["code"], "OK");
  EXPECT_EQ(lines[8]["target"], "key " + created.info().id() + " role admin tenant alice");
  EXPECT_EQ(lines[9]["action"], "Cordon");
  EXPECT_EQ(lines[9]["code"], "OK");
  EXPECT_EQ(lines[10]["action"], "RevokeKey");
  EXPECT_EQ(lines[11]["action"], "ListWorkers");
  EXPECT_EQ(lines[11]["key"], "anonymous");
  EXPECT_EQ(lines[11]["code"], "UNAUTHENTICATED");
  std::ifstream in(dir_ + "/audit.log");
  std::stringstream all;
  all << in.rdbuf();
  for (const std::string& k : {alice, admin_key_, created.key()}) {
    EXPECT_EQ(all.str().find(k.substr(21)), std::string::npos);
  }
}

TEST_F(AuthTest, WorkerKeysRegisterOnlyTheirWorker) {
  AddWorker("w1");  // registers with worker_key_, which binds it to w1
  absl::StatusOr<std::vector<KeyRecord>> keys = keys_->List();
  ASSERT_TRUE(keys.ok());
  bool bound = false;
  for (const KeyRecord& k : *keys) bound = bound || (k.role == Role::kWorker && k.worker == "w1");
  EXPECT_TRUE(bound);
  // A fake worker with the same key under another id, with another's key, or with none.
  const auto register_as = [&](const std::string& key, const std::string& id) {
    grpc::ClientContext ctx;
    if (!key.empty()) ctx.AddMetadata("authorization", "Bearer " + key);
    v1::RegisterRequest req;
    *req.mutable_status() = StatusOf(id, "127.0.0.1:1", "smol", 1 << 30, "fp-smol");
    v1::RegisterResponse resp;
    return reg_->Register(&ctx, req, &resp);
  };
  grpc::Status s = register_as(worker_key_, "rogue");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("belongs to worker 'w1'"));
  EXPECT_EQ(register_as("", "w1").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(register_as(NewKey("alice", Role::kTenant), "w1").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // Nothing changed: one worker, w1, at its own address.
  const std::vector<WorkerSnapshot> workers = registry_->List();
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0].desc.id, "w1");
  EXPECT_EQ(workers[0].desc.address, workers_.at("w1").address);
  // Heartbeats need the key too; the bound one goes on working.
  EXPECT_FALSE(Heartbeat("w1"));
  registry_bearer_.clear();
  grpc::ClientContext ctx;
  v1::HeartbeatRequest hb;
  *hb.mutable_status() = StatusOf("w1", "127.0.0.1:1", "smol", 1, "fp-smol");
  v1::HeartbeatResponse resp;
  EXPECT_EQ(reg_->Heartbeat(&ctx, hb, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // A worker key is no client key.
  v1::SessionInfo info;
  EXPECT_EQ(CreateAs(worker_key_, &info).error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(AuthTest, KeysAreStoredHashedAndSurviveARestart) {
  const std::string alice = NewKey("alice", Role::kTenant);
  StopRouter();
  // The secret half of no key is anywhere in the router's files (journal, WAL, audit log).
  for (const auto& f : std::filesystem::recursive_directory_iterator(dir_)) {
    if (!f.is_regular_file()) continue;
    std::ifstream in(f.path(), std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    for (const std::string& k : {alice, admin_key_, worker_key_}) {
      EXPECT_EQ(bytes.str().find(k.substr(21)), std::string::npos) << f.path();
    }
  }
  StartRouter();
  AddWorker("w1");
  v1::SessionInfo info;
  EXPECT_TRUE(CreateAs(alice, &info).ok());
  EXPECT_EQ(info.tenant(), "alice");
}

// Issue #13: keys expire. A key created with a time to live is refused once it has passed (the
// check's clock is an argument: no waiting), the expiry survives a restart and shows in listings,
// and a negative or overlong one is refused.
TEST_F(AuthTest, AKeyWithATimeToLiveIsRefusedOnceItHasPassed) {
  v1::CreateKeyRequest create;
  create.set_tenant("acme");
  create.set_ttl_seconds(3600);
  v1::CreateKeyResponse created;
  ASSERT_TRUE(admin_->CreateKey(With(admin_key_).get(), create, &created).ok());
  const std::string key = created.key();
  const absl::Time made = absl::FromUnixMillis(created.info().created_unix_ms());
  EXPECT_EQ(created.info().expires_unix_ms(), created.info().created_unix_ms() + 3600 * 1000);
  AddWorker("w1");
  v1::SessionInfo info;
  EXPECT_TRUE(CreateAs(key, &info).ok());  // in force now
  EXPECT_TRUE(keys_->Check(key, made + absl::Minutes(59)).ok());
  EXPECT_THAT(keys_->Check(key, made + absl::Hours(1)),
              rsd::testing::StatusIs(absl::StatusCode::kUnauthenticated,
                                     HasSubstr("expired API key " + created.info().id())));
  StopRouter();
  StartRouter();
  EXPECT_THAT(keys_->Check(key, made + absl::Hours(2)),
              rsd::testing::StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("expired")));
  v1::ListKeysResponse listed;
  ASSERT_TRUE(admin_->ListKeys(With(admin_key_).get(), v1::ListKeysRequest(), &listed).ok());
  int with_expiry = 0;
  for (const v1::KeyInfo& k : listed.keys()) with_expiry += k.expires_unix_ms() != 0;
  EXPECT_EQ(with_expiry, 1);
  for (int64_t bad : {int64_t{-1}, int64_t{11} * 365 * 86400}) {
    create.set_ttl_seconds(bad);
    const grpc::Status s = admin_->CreateKey(With(admin_key_).get(), create, &created);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_THAT(s.error_message(), HasSubstr("ttl_seconds"));
  }
}

TEST(AdminKeyFile, WrittenOnceWithMode0600) {
  const std::string dir = rsd::testing::MakeTempDir("admin_key");
  {
    absl::StatusOr<std::unique_ptr<Journal>> j = Journal::Open(dir + "/journal");
    ASSERT_TRUE(j.ok());
    KeyStore keys((*j)->rocks());
    const std::string path = dir + "/journal/admin.key";
    absl::StatusOr<std::string> id = EnsureAdminKey(keys, path);
    ASSERT_TRUE(id.ok()) << id.status();
    ASSERT_EQ(id->size(), 16u);
    struct stat st;
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600);
    std::ifstream in(path);
    std::string key;
    in >> key;
    absl::StatusOr<KeyRecord> rec = keys.Check(key);
    ASSERT_TRUE(rec.ok()) << rec.status();
    EXPECT_EQ(rec->role, Role::kAdmin);
    EXPECT_EQ(rec->id, *id);
    // An admin key in force: nothing new.
    absl::StatusOr<std::string> again = EnsureAdminKey(keys, path);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, "");
    std::ifstream in2(path);
    std::string key2;
    in2 >> key2;
    EXPECT_EQ(key2, key);
  }
  std::filesystem::remove_all(dir);
}

TEST(KeyRecordCodec, RoundTripsAndRejectsDamage) {
  KeyRecord r;
  r.id = "0123456789abcdef";
  r.sha256 = std::string(32, '\x07');
  r.tenant = "acme";
  r.role = Role::kWorker;
  r.worker = "w9";
  r.created_unix_ms = 1700000000000;
  r.revoked_unix_ms = 1700000001000;
  const std::string bytes = EncodeKeyRecord(r);
  absl::StatusOr<KeyRecord> back = DecodeKeyRecord(bytes, r.id);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, r);
  EXPECT_EQ(DecodeKeyRecord(bytes, "fedcba9876543210").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeKeyRecord(bytes.substr(0, bytes.size() / 2), r.id).status().code(),
            absl::StatusCode::kDataLoss);
}

// A worker's --tls-peers patterns: a name as DNS compares it (case ignored), or "*.domain" for one
// whole leading label; nothing else is a wildcard.
TEST(TlsPeersTest, NamesMatchExactlyOrByOneLeadingLabel) {
  EXPECT_TRUE(CertificateNameMatches("rsd-router", "rsd-router"));
  EXPECT_TRUE(CertificateNameMatches("RSD-Router", "rsd-router"));
  EXPECT_FALSE(CertificateNameMatches("rsd-router2", "rsd-router"));
  const std::string pods = "*.rsd-worker.residuum.svc.cluster.local";
  EXPECT_TRUE(CertificateNameMatches("rsd-worker-0.rsd-worker.residuum.svc.cluster.local", pods));
  EXPECT_FALSE(CertificateNameMatches("a.b.rsd-worker.residuum.svc.cluster.local", pods));
  EXPECT_FALSE(CertificateNameMatches(".rsd-worker.residuum.svc.cluster.local", pods));
  EXPECT_FALSE(CertificateNameMatches("rsd-worker.residuum.svc.cluster.local", pods));
  EXPECT_FALSE(CertificateNameMatches("x.rsd-worker.other.svc.cluster.local", pods));
  EXPECT_FALSE(CertificateNameMatches("*.rsd-worker.residuum.svc.cluster.local", pods + "x"));
  EXPECT_FALSE(CertificateNameMatches("anything", "*"));
  EXPECT_FALSE(CertificateNameMatches("w1", "w*"));
  EXPECT_FALSE(CertificateNameMatches("", ""));
}

}  // namespace
}  // namespace rsd::router
