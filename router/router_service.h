// The router's gRPC layer: rsd.v1.Client, rsd.v1.Admin and rsd.v1.Registry over the journal
// (journal.h) and the worker registry (registry.h). Handlers translate; RouterCore holds what
// they share (the journal, the registry, cached channels to workers, session lookups).
//
// Tenancy: the tenant is the caller's "x-rsd-tenant" metadata, "default" without it. Client calls
// see only their tenant's sessions (another tenant's session is NOT_FOUND, the same as an unknown
// one). Admin calls see every tenant.
//
// Turns: the router does not serialize turns of one session; the owning worker does (a second
// concurrent turn gets whatever the worker answers). A turn is journaled (synced) before its
// TurnDone is relayed to the client. Worker error statuses are relayed with their code and
// message; UNAVAILABLE from a worker (or a dead / unregistered owner) names the worker.
//
// Thread safety: every handler may run concurrently (gRPC's sync server thread pool).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "router/journal.h"
#include "router/registry.h"
#include "rsd/v1/admin.grpc.pb.h"
#include "rsd/v1/client.grpc.pb.h"
#include "rsd/v1/worker.grpc.pb.h"

namespace rsd::router {

struct RouterOptions {
  double heartbeat_interval_seconds = 1.0;  // told to workers at registration
  int max_message_bytes = 16 << 20;         // on channels to workers
  absl::Duration worker_call_timeout = absl::Seconds(30);  // unary calls to workers
};

// absl::Status ↔ grpc::Status (the codes are the same numbers).
grpc::Status ToGrpc(const absl::Status& s);
absl::Status FromGrpc(const grpc::Status& s);
// The caller's tenant: metadata "x-rsd-tenant", else "default".
std::string TenantOf(const grpc::ServerContext& ctx);

class RouterCore {
 public:
  // `journal` and `registry` must outlive the core.
  RouterCore(Journal* journal, Registry* registry, RouterOptions options);

  // Seeds the registry's placed-session counts from the journal (a restarted router).
  absl::Status LoadJournal();

  Journal& journal() { return *journal_; }
  Registry& registry() { return *registry_; }
  const RouterOptions& options() const { return options_; }

  // A stub for the worker at `address`; one channel per address, cached.
  std::shared_ptr<v1::Worker::Stub> WorkerStub(const std::string& address);
  // A client context for a unary worker call: the caller's deadline, capped at
  // options().worker_call_timeout.
  std::unique_ptr<grpc::ClientContext> WorkerContext(const grpc::ServerContext& ctx);

  // The session `hex` as the journal has it. `tenant` null: any tenant (admin). INVALID_ARGUMENT
  // for a malformed id; NOT_FOUND "unknown session <hex>" if absent or another tenant's.
  absl::StatusOr<SessionRecord> LoadSession(const std::string& hex, const std::string* tenant);
  // The session's owner if it can be called: UNAVAILABLE naming the worker and the session if it
  // is not registered or dead.
  absl::StatusOr<WorkerSnapshot> Owner(const SessionRecord& session);
  // A worker call's failure as our status: UNAVAILABLE gets the worker named; every other code
  // and message passes through unchanged.
  static absl::Status WorkerError(const grpc::Status& s, const std::string& worker,
                                  const std::string& address);

  // SessionInfo from the owner's DescribeSession with the journal's ownership fields; from the
  // journal alone if the owner cannot be reached (state "unreachable") or does not have the
  // session (NOT_FOUND from the worker: state "missing"). Other worker errors pass through.
  absl::StatusOr<v1::SessionInfo> Describe(const SessionRecord& session,
                                           const grpc::ServerContext& ctx);
  // SessionInfo from the journal alone (turns, token_count from the last turn's usage).
  absl::StatusOr<v1::SessionInfo> FromJournal(const SessionRecord& session);
  static v1::SessionRef RefOf(const SessionRecord& session);
  // Overwrites the ownership fields of `info` (id, tenant, model, worker, epoch, options).
  static void FillOwnership(const SessionRecord& session, v1::SessionInfo* info);

 private:
  Journal* const journal_;
  Registry* const registry_;
  const RouterOptions options_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<v1::Worker::Stub>> stubs_ ABSL_GUARDED_BY(mu_);
};

class ClientService final : public v1::Client::Service {
 public:
  explicit ClientService(RouterCore* core) : core_(*core) {}
  grpc::Status CreateSession(grpc::ServerContext* ctx, const v1::CreateSessionRequest* req,
                             v1::SessionInfo* resp) override;
  grpc::Status Chat(grpc::ServerContext* ctx, const v1::TurnRequest* req,
                    grpc::ServerWriter<v1::ChatEvent>* writer) override;
  grpc::Status GetSession(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                          v1::SessionInfo* resp) override;
  grpc::Status CloseSession(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                            v1::CloseSessionResponse* resp) override;
  grpc::Status UndoTurn(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                        v1::SessionInfo* resp) override;
  grpc::Status ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest* req,
                          v1::ListModelsResponse* resp) override;

 private:
  absl::StatusOr<v1::SessionInfo> Create(const grpc::ServerContext& ctx,
                                         const v1::CreateSessionRequest& req);
  absl::Status Close(const grpc::ServerContext& ctx, const std::string& hex);
  absl::StatusOr<v1::SessionInfo> Undo(const grpc::ServerContext& ctx, const std::string& hex);
  RouterCore& core_;
};

// One turn through the router (chat.cc): replay from the journal or relay from the owner.
absl::Status RunChat(RouterCore& core, grpc::ServerContext* ctx, const v1::TurnRequest& req,
                     grpc::ServerWriter<v1::ChatEvent>* writer);

class AdminService final : public v1::Admin::Service {
 public:
  explicit AdminService(RouterCore* core) : core_(*core) {}
  grpc::Status ListWorkers(grpc::ServerContext* ctx, const v1::ListWorkersRequest* req,
                           v1::ListWorkersResponse* resp) override;
  grpc::Status ListSessions(grpc::ServerContext* ctx, const v1::ListSessionsRequest* req,
                            v1::ListSessionsResponse* resp) override;
  grpc::Status DescribeSession(grpc::ServerContext* ctx, const v1::DescribeSessionRequest* req,
                               v1::SessionInfo* resp) override;
  grpc::Status Cordon(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                      v1::WorkerInfo* resp) override;
  grpc::Status Uncordon(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                        v1::WorkerInfo* resp) override;
  grpc::Status Drain(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                     v1::WorkerInfo* resp) override;
  grpc::Status Migrate(grpc::ServerContext* ctx, const v1::MigrateRequest* req,
                       v1::SessionInfo* resp) override;
  grpc::Status Failover(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                        v1::WorkerInfo* resp) override;

 private:
  RouterCore& core_;
};

class RegistryService final : public v1::Registry::Service {
 public:
  explicit RegistryService(RouterCore* core) : core_(*core) {}
  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override;

 private:
  RouterCore& core_;
};

}  // namespace rsd::router
