// The router's gRPC layer: rsd.v1.Client, rsd.v1.Admin and rsd.v1.Registry over the journal
// (journal.h) and the worker registry (registry.h). Handlers translate; RouterCore holds what
// they share (the journal, the registry, cached channels to workers, session lookups).
//
// Tenancy: the tenant is the caller's "x-rsd-tenant" metadata, "default" without it. Client calls
// see only their tenant's sessions (another tenant's session is NOT_FOUND, the same as an unknown
// one). Admin calls see every tenant.
//
// Turns: a turn holds its session's gate (session_gate.h) while it runs, so turns of one session
// are serialized by the router and ownership changes (migrate, drain, failover) happen between
// turns; a turn waits for the gate within its deadline and then reads the owner from the journal.
// Before a turn is forwarded its seed and parameters are journaled as the session's pending turn
// (synced): a retried turn id that never committed runs with the same seed wherever the session
// now lives. A turn is journaled (synced) with the tokens it appended to the session's log before
// its TurnDone is relayed to the client. While the owner is dead, unregistered or unreachable and
// nothing has been relayed yet, the turn waits (up to RouterOptions::owner_wait, within its
// deadline) for failover or the worker's return, then runs on the owner of that moment. A turn cut
// off by the death of its worker after output began is UNAVAILABLE (retriable with its turn id).
// Worker error statuses are relayed with their code and message; UNAVAILABLE names the worker.
//
// Ownership changes (migration.cc): Migrate streams a session's state from its owner to a target
// (ExportSession → ImportSession), Failover rebuilds it on a target from the journal's token log
// (a token-only ImportSession stream written by the router); both switch the journal's owner with
// epoch + 1 only once the target has the session, then drop the old copy. One owner at any time:
// the journal's. A failover monitor thread fails over the sessions of workers declared dead.
//
// Thread safety: every handler may run concurrently (gRPC's sync server thread pool).
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "proto/grpc_status.h"
#include "router/journal.h"
#include "router/registry.h"
#include "router/session_gate.h"
#include "rsd/v1/admin.grpc.pb.h"
#include "rsd/v1/client.grpc.pb.h"
#include "rsd/v1/worker.grpc.pb.h"

namespace rsd::router {

struct RouterOptions {
  double heartbeat_interval_seconds = 1.0;  // told to workers at registration
  int max_message_bytes = 16 << 20;         // on channels to workers
  absl::Duration worker_call_timeout = absl::Seconds(30);  // unary calls to workers
  // How long a turn waits for a dead, unregistered or unreachable owner to come back or be failed
  // over (never past the turn's deadline).
  absl::Duration owner_wait = absl::Seconds(30);
  // Between attempts while waiting for an owner.
  absl::Duration retry_interval = absl::Milliseconds(100);
  // One session's migration or failover (gate wait, state stream, switch) unless the caller's
  // deadline is sooner.
  absl::Duration move_timeout = absl::Seconds(120);
  // How often the failover monitor looks for dead workers that still own sessions.
  absl::Duration failover_scan_interval = absl::Milliseconds(250);
};

// The pieces of a session's token-only state stream: what the router sends to ImportSession to
// rebuild a session from its journal (failover). FAILED_PRECONDITION naming the session and the
// turn if a turn has no log tokens (journaled before migration) or the turns' log tokens do not
// add up to the history the worker reported.
absl::StatusOr<std::vector<v1::StateChunk>> TokenStateStream(const SessionRecord& session,
                                                             const std::vector<TurnRecord>& turns,
                                                             uint64_t new_epoch,
                                                             const std::string& model_fingerprint);

// absl::Status ↔ grpc::Status (proto/grpc_status.h).
using rsd::FromGrpc;
using rsd::ToGrpc;
// The caller's tenant: metadata "x-rsd-tenant", else "default".
std::string TenantOf(const grpc::ServerContext& ctx);

class RouterCore {
 public:
  // `journal` and `registry` must outlive the core.
  RouterCore(Journal* journal, Registry* registry, RouterOptions options);
  ~RouterCore();  // stops the failover monitor

  // Seeds the registry's placed-session counts from the journal (a restarted router).
  absl::Status LoadJournal();

  Journal& journal() { return *journal_; }
  Registry& registry() { return *registry_; }
  SessionGates& gates() { return gates_; }
  const RouterOptions& options() const { return options_; }

  // A stub for the worker at `address`; one channel per address, cached.
  std::shared_ptr<v1::Worker::Stub> WorkerStub(const std::string& address);
  // A client context for a unary worker call: the caller's deadline, capped at
  // options().worker_call_timeout.
  std::unique_ptr<grpc::ClientContext> WorkerContext(const grpc::ServerContext& ctx);
  // A client context for a worker call that must end by `deadline`.
  static std::unique_ptr<grpc::ClientContext> ContextUntil(absl::Time deadline);

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

  // --- Ownership changes (migration.cc). Each takes the session's gate (waiting for a running
  // turn to end) and re-reads the journal under it. On failure the journal is unchanged and the
  // previous owner keeps the session.

  // Moves session `hex` (any tenant) to worker `to` with its state in `form` ("" = "auto").
  // INVALID_ARGUMENT for a malformed id or an unknown form; NOT_FOUND for an unknown session or
  // worker; FAILED_PRECONDITION if `to` already owns it, is not ready, serves another model or
  // another model fingerprint; UNAVAILABLE if the owner is dead (use failover);
  // DEADLINE_EXCEEDED if the gate or the stream outlasts `deadline`; the source's or target's
  // refusal (code kept, message prefixed with the session and both workers) otherwise.
  absl::StatusOr<v1::MigrateResponse> Migrate(const std::string& hex, const std::string& to,
                                              const std::string& form, absl::Time deadline);
  // Marks `worker` draining and migrates each session it owns (form "auto") to the best other
  // ready worker of its model. NOT_FOUND for an unknown worker; else the sessions moved, or the
  // first failure's code with every failure named.
  absl::StatusOr<std::vector<v1::MigrateResponse>> Drain(const std::string& worker,
                                                         absl::Time deadline);
  // Cordons `worker` and rebuilds each session it owns on the best other ready worker of its model
  // from the journal. Errors as Drain.
  absl::StatusOr<std::vector<v1::MigrateResponse>> Failover(const std::string& worker,
                                                            absl::Time deadline);
  // Fails over the sessions of every dead worker that still owns some; what the monitor does on
  // each scan (tests call it directly).
  void FailoverDeadWorkers();
  // Starts the thread that calls FailoverDeadWorkers every failover_scan_interval.
  void StartFailoverMonitor();

  // Sessions a registering worker reported that it must drop: unknown to the journal, owned by
  // another worker, or at an older epoch than the journal's. A session whose gate is held (a turn
  // or a move in progress) is left alone.
  std::vector<v1::SessionRef> SessionsToDrop(const std::string& worker,
                                             const std::vector<v1::SessionRef>& reported);

  // Turns in flight on a worker, so that a worker declared dead does not keep them (and their
  // sessions' gates) until their deadlines: the monitor cancels them.
  struct InflightTurn {
    grpc::ClientContext* context = nullptr;
    std::atomic<bool> worker_died{false};
  };
  void TrackTurn(const std::string& worker, InflightTurn* turn);
  void UntrackTurn(const std::string& worker, InflightTurn* turn);
  void CancelTurnsOn(const std::string& worker);

 private:
  // Gate held for the session. The state stream from the owner's export into `target`.
  absl::StatusOr<v1::MigrateResponse> MoveLocked(const SessionRecord& session,
                                                 const WorkerSnapshot& target,
                                                 const std::string& form, absl::Time deadline,
                                                 absl::Time started);
  // Gate held. The token-only stream from the journal into `target`.
  absl::StatusOr<v1::MigrateResponse> RebuildLocked(const SessionRecord& session,
                                                    const WorkerSnapshot& target,
                                                    absl::Time deadline, absl::Time started);
  // Pipes `next` (false at the end) into the target's ImportSession.
  absl::StatusOr<v1::ImportSessionResponse> Import(
      const WorkerSnapshot& target, absl::Time deadline,
      const std::function<absl::StatusOr<bool>(v1::StateChunk*)>& next);
  // Gate held, target has the session at epoch + 1: journal the switch, drop the old copy.
  absl::StatusOr<v1::MigrateResponse> Switch(const SessionRecord& session,
                                             const WorkerSnapshot& target,
                                             const v1::ImportSessionResponse& imported,
                                             absl::Time deadline, absl::Time started);
  // Takes the gate and fails over one session of `from` (nullopt: it is no longer there).
  absl::StatusOr<std::optional<v1::MigrateResponse>> FailoverOne(const SessionId& id,
                                                                 const std::string& from,
                                                                 absl::Time deadline);
  // Best effort CloseSession of `ref` on the worker `id` (logged on failure).
  void CloseCopy(const std::string& worker, const v1::SessionRef& ref, absl::Time deadline);
  std::vector<SessionId> SessionsOwnedBy(const std::string& worker);
  void MonitorLoop();

 private:
  Journal* const journal_;
  Registry* const registry_;
  const RouterOptions options_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<v1::Worker::Stub>> stubs_ ABSL_GUARDED_BY(mu_);
  std::multimap<std::string, InflightTurn*> inflight_ ABSL_GUARDED_BY(mu_);
  // The monitor's last failure per session, so that a failure repeated every scan is logged once.
  std::map<SessionId, std::string> failover_errors_ ABSL_GUARDED_BY(mu_);
  SessionGates gates_;
  absl::Mutex monitor_mu_;
  bool stop_monitor_ ABSL_GUARDED_BY(monitor_mu_) = false;
  std::thread monitor_;
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
                     v1::DrainResponse* resp) override;
  grpc::Status Migrate(grpc::ServerContext* ctx, const v1::MigrateRequest* req,
                       v1::MigrateResponse* resp) override;
  grpc::Status Failover(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                        v1::FailoverResponse* resp) override;

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
