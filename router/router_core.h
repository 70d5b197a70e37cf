// The router's core, without a transport: sessions (create, chat, describe, close, undo), the
// ownership changes (migrate, drain, failover) and registration's drop list, over the journal
// (journal.h), the worker registry (registry.h) and workers reached through WorkerClients
// (worker_client.h). The gRPC services (router_service.h) only translate: they hand the core the
// caller (tenant, deadline, cancellation) and turn its statuses into gRPC's.
//
// Tenancy: client calls carry the caller's tenant and see only that tenant's sessions (another
// tenant's session is NOT_FOUND, the same as an unknown one). Admin calls see every tenant.
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
// Thread safety: every method may run concurrently.
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
#include "router/journal.h"
#include "router/registry.h"
#include "router/router_metrics.h"
#include "router/session_gate.h"
#include "router/tenant_quotas.h"
#include "router/worker_client.h"
#include "rsd/v1/admin.pb.h"
#include "rsd/v1/client.pb.h"
#include "rsd/v1/worker.pb.h"

namespace rsd::router {

struct RouterOptions {
  double heartbeat_interval_seconds = 1.0;                 // told to workers at registration
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
  // How often the monitor closes sessions idle past twice their TTL.
  absl::Duration expiry_scan_interval = absl::Seconds(10);
  // Per-tenant sessions and running turns (tenant_quotas.h; 0: unlimited).
  QuotaOptions quotas;
  // Cache-aware placement of creates that carry their first turn (registry.h).
  bool prefix_routing = true;
};

// The pieces of a session's token-only state stream: what the router sends to ImportSession to
// rebuild a session from its journal (failover). FAILED_PRECONDITION naming the session and the
// turn if a turn has no log tokens (journaled before migration) or the turns' log tokens do not
// add up to the history the worker reported.
absl::StatusOr<std::vector<v1::StateChunk>> TokenStateStream(const SessionRecord& session,
                                                             const std::vector<TurnRecord>& turns,
                                                             uint64_t new_epoch,
                                                             const std::string& model_fingerprint);

// Who a client call comes from and how long it may take.
struct Caller {
  std::string tenant = "default";
  absl::Time deadline = absl::InfiniteFuture();
  std::function<bool()> cancelled;  // the caller went away (null: never)
  bool IsCancelled() const { return cancelled && cancelled(); }
};

class RouterCore {
 public:
  // `journal`, `registry` and `workers` must outlive the core.
  RouterCore(Journal* journal, Registry* registry, WorkerClients* workers, RouterOptions options);
  ~RouterCore();  // stops the failover monitor

  // Seeds the registry's placed-session counts from the journal (a restarted router).
  absl::Status LoadJournal();

  Journal& journal() { return *journal_; }
  Registry& registry() { return *registry_; }
  SessionGates& gates() { return gates_; }
  const RouterOptions& options() const { return options_; }
  RouterMetrics& metrics() { return metrics_; }
  TenantQuotas& quotas() { return quotas_; }
  // Sets the metrics' gauges of workers and sessions by state from the registry (at scrape time).
  void RefreshMetrics();

  // The client for the worker `w`.
  std::shared_ptr<WorkerClient> Worker(const WorkerSnapshot& w) {
    return workers_->At(w.desc.address);
  }
  // A worker registered at `address` (WorkerClients::Reconnect).
  void WorkerRegistered(const std::string& address) { workers_->Reconnect(address); }
  // A unary worker call's deadline: the caller's, capped at options().worker_call_timeout.
  absl::Time UnaryDeadline(absl::Time caller_deadline) const;

  // --- Client calls (sessions.cc, chat.cc). Each sees only the caller's tenant's sessions.

  // Places a new session on the least loaded ready worker of the model ("" = any), opens it there
  // and journals it. RESOURCE_EXHAUSTED if the tenant holds its quota of sessions; the
  // placement's refusal, or the worker's, if none can take it.
  absl::StatusOr<v1::SessionInfo> CreateSession(const Caller& caller,
                                                const v1::CreateSessionRequest& req);
  // Describe (below) of the caller's session `hex`.
  absl::StatusOr<v1::SessionInfo> GetSession(const Caller& caller, const std::string& hex);
  // Closes the session on its owner (unless the owner cannot be reached or no longer has it) and
  // forgets it. A running turn finishes first; any other refusal of the owner is returned.
  absl::Status CloseSession(const Caller& caller, const std::string& hex);
  // Removes the session's last turn on the owner and in the journal.
  absl::StatusOr<v1::SessionInfo> UndoTurn(const Caller& caller, const std::string& hex);
  // Closes every session idle at `now` for twice its TTL or longer since its last committed turn
  // (or its creation), as its worker does, so that it leaves the journal and stops counting
  // against its tenant's quotas; a session whose gate is held (a turn or a move) is left for a
  // later scan. Returns how many were closed. The monitor calls it every expiry_scan_interval
  // (router/expiry.cc).
  int ExpireIdleSessions(absl::Time now);
  // One turn: replayed from the journal if its turn id was committed, else relayed from the owner
  // (see the header comment). Events go to `write`; false from it means the caller went away.
  // Records the turn's time to first token, inter-token gaps and outcome in metrics().
  absl::Status Chat(const Caller& caller, const v1::TurnRequest& req,
                    const std::function<bool(const v1::ChatEvent&)>& write);

  // The session `hex` as the journal has it. `tenant` null: any tenant (admin). INVALID_ARGUMENT
  // for a malformed id; NOT_FOUND "unknown session <hex>" if absent or another tenant's.
  absl::StatusOr<SessionRecord> LoadSession(const std::string& hex, const std::string* tenant);
  // The session's owner if it can be called: UNAVAILABLE naming the worker and the session if it
  // is not registered or dead.
  absl::StatusOr<WorkerSnapshot> Owner(const SessionRecord& session);
  // A worker call's failure as our status: UNAVAILABLE gets the worker named; every other code
  // and message passes through unchanged.
  static absl::Status WorkerError(const absl::Status& s, const std::string& worker,
                                  const std::string& address);

  // SessionInfo from the owner's DescribeSession with the journal's ownership fields; from the
  // journal alone if the owner cannot be reached (state "unreachable") or does not have the
  // session (NOT_FOUND from the worker: state "missing"). Other worker errors pass through.
  absl::StatusOr<v1::SessionInfo> Describe(const SessionRecord& session, absl::Time deadline);
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
  // Scans the monitor has completed, and times a turn found its owner dead or unreachable and
  // waited to try again: events tests wait on, instead of sleeping and hoping.
  int64_t monitor_rounds() const { return monitor_rounds_.load(); }
  int64_t turn_retries() const { return turn_retries_.load(); }

  // Sessions `worker` reports damaged in its storage (WorkerStatus.quarantined): those the
  // journal still gives it are queued for a rebuild from the journal (quarantine.cc).
  void NoteQuarantined(const std::string& worker, const std::vector<v1::SessionRef>& refs);
  // Sessions a registering worker holds with fewer committed turns than the journal has (its
  // storage lost writes): queued for the same rebuild, so that no acknowledged turn is lost.
  // `turns[i]` is the worker's count for `refs[i]`.
  void NoteBehind(const std::string& worker, const std::vector<v1::SessionRef>& refs,
                  const std::vector<uint32_t>& turns);
  // Rebuilds the queued sessions on another ready worker of their model (the reporting one if it
  // is the only one); a failure stays queued for the next scan. The monitor's scan calls it.
  void RebuildQuarantined();

  // A copy of a session `worker` may hold at `ref`'s epoch that the journal does not name, to
  // close at or after `when` unless the journal names it by then: an import whose reply was lost
  // can still commit on its target after the router closed the copy there (until the transfer's
  // deadline), and a close that failed leaves its copy. CloseLateCopies, which the monitor's scan
  // calls with the time, closes those that are due; late_copies_closed() counts them.
  void CloseCopyLater(const std::string& worker, const v1::SessionRef& ref, absl::Time when);
  void CloseLateCopies(absl::Time now);
  int64_t late_copies_closed() const { return late_copies_closed_.load(); }

  // Sessions a registering worker reported that it must drop: unknown to the journal, owned by
  // another worker, or at an older epoch than the journal's. A session whose gate is held (a turn
  // or a move in progress) is left alone.
  std::vector<v1::SessionRef> SessionsToDrop(const std::string& worker,
                                             const std::vector<v1::SessionRef>& reported);

  // Turns in flight on a worker, so that a worker declared dead does not keep them (and their
  // sessions' gates) until their deadlines: the monitor cancels them.
  struct InflightTurn {
    ReadStream<v1::ChatEvent>* call = nullptr;
    std::atomic<bool> worker_died{false};
  };
  void TrackTurn(const std::string& worker, InflightTurn* turn);
  void UntrackTurn(const std::string& worker, InflightTurn* turn);
  void CancelTurnsOn(const std::string& worker);

 private:
  // CreateSession once the tenant's quota has room: placement, open, journal.
  // The placement hint of a create that carries its first turn (a worker's PromptKeys), or none
  // (routing off, no first turn, no worker could compute it: placement by load).
  std::optional<PrefixHint> PrefixHintFor(const Caller& caller,
                                          const v1::CreateSessionRequest& req);
  absl::StatusOr<v1::SessionInfo> PlaceAndOpen(const Caller& caller,
                                               const v1::CreateSessionRequest& req);
  // Journals a session its worker has opened; on failure closes it there (best effort).
  absl::StatusOr<v1::SessionInfo> JournalNewSession(const Caller& caller, const SessionRecord& rec,
                                                    v1::SessionInfo info,
                                                    const std::shared_ptr<WorkerClient>& client);
  // Chat without the metrics.
  absl::Status RunTurn(const Caller& caller, const v1::TurnRequest& req,
                       const std::function<bool(const v1::ChatEvent&)>& write);
  // Counts a finished move of `kind` ("migrate", "drain", "failover") in metrics().
  absl::StatusOr<v1::MigrateResponse> Recorded(const std::string& kind,
                                               absl::StatusOr<v1::MigrateResponse> moved,
                                               absl::Time started);
  // Gate held for the session. The owner sends its state to `target` directly (SendSession), or
  // PipeLocked pipes it.
  absl::StatusOr<v1::MigrateResponse> MoveLocked(const SessionRecord& session,
                                                 const WorkerSnapshot& target,
                                                 const std::string& form, absl::Time deadline,
                                                 absl::Time started);
  // Gate held, after MoveLocked's SendSession could not reach the target: the owner's export
  // piped through the router into `target`, without the leading chunks the target says it holds
  // (`dedup`; router/dedup_pipe.h): if it no longer does, piped again whole.
  absl::StatusOr<v1::MigrateResponse> PipeLocked(const SessionRecord& session,
                                                 const WorkerSnapshot& source,
                                                 const WorkerSnapshot& target,
                                                 const v1::ExportSessionRequest& req,
                                                 absl::Time deadline, absl::Time started,
                                                 bool dedup = true);
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
                                             const std::string& route, absl::Time deadline,
                                             absl::Time started);
  // Takes the gate and fails over one session of `from` (nullopt: it is no longer there).
  absl::StatusOr<std::optional<v1::MigrateResponse>> FailoverOne(const SessionId& id,
                                                                 const std::string& from,
                                                                 absl::Time deadline);
  // CloseSession's work under the session's gate.
  absl::Status CloseLocked(const SessionRecord& rec, absl::Time deadline);
  // When the session was last active: its last committed turn, else its creation.
  absl::StatusOr<absl::Time> LastActive(const SessionRecord& rec);
  // Best effort CloseSession of `ref` on the worker `id`; a failure is logged and the copy closed
  // later (CloseCopyLater).
  void CloseCopy(const std::string& worker, const v1::SessionRef& ref, absl::Time deadline);
  // CloseSession of `ref` on `worker`: NOT_FOUND without a call when the worker is unknown or dead
  // (its registration drops the copy: RegisterResponse.drop).
  absl::Status CloseOn(const std::string& worker, const v1::SessionRef& ref, absl::Time until);
  struct LateCopy {
    std::string worker;
    v1::SessionRef ref;
    absl::Time when;
    std::string last_error;  // logged when it changes
  };
  // One due late copy under its session's gate: settled (closed, gone, at another epoch there,
  // named by the journal, or its worker dead: its registration drops it), to try at the next scan
  // (the gate held, the journal unreadable), or its worker failed the close.
  enum class LateClose { kSettled, kNextScan, kWorkerFailed };
  LateClose CloseLateCopy(LateCopy& copy);
  std::vector<SessionId> SessionsOwnedBy(const std::string& worker);
  // One queued rebuild: true once done, false if the session is gone or no longer the worker's.
  absl::StatusOr<bool> RebuildQuarantinedOne(const SessionId& id, const std::string& worker,
                                             absl::Time deadline);
  void MonitorLoop();

 private:
  Journal* const journal_;
  Registry* const registry_;
  WorkerClients* const workers_;
  const RouterOptions options_;
  absl::Mutex mu_;
  std::multimap<std::string, InflightTurn*> inflight_ ABSL_GUARDED_BY(mu_);
  // The monitor's last failure per session, so that a failure repeated every scan is logged once.
  std::map<SessionId, std::string> failover_errors_ ABSL_GUARDED_BY(mu_);
  // Sessions reported damaged, and by which worker, until rebuilt.
  std::map<SessionId, std::string> quarantined_ ABSL_GUARDED_BY(mu_);
  std::vector<LateCopy> late_copies_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> late_copies_closed_{0};
  SessionGates gates_;
  RouterMetrics metrics_;
  TenantQuotas quotas_;
  absl::Mutex monitor_mu_;
  bool stop_monitor_ ABSL_GUARDED_BY(monitor_mu_) = false;
  std::thread monitor_;
  std::atomic<int64_t> monitor_rounds_{0};
  std::atomic<int64_t> turn_retries_{0};
};

}  // namespace rsd::router
