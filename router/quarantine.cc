// Sessions a worker found damaged in its own storage (issue #14): the worker starts without them
// and reports them in its status, or registers them with fewer committed turns than the journal
// holds (its storage lost writes); the router rebuilds each from its journal (the token-only
// stream failover uses) on another ready worker of its model, or on the reporting worker itself
// when it is the only one. The failover monitor's scan runs the queue.
#include "absl/strings/str_cat.h"
#include "router/router_core.h"
#include "storage/common/log.h"
#include "storage/common/status.h"

namespace rsd::router {

void RouterCore::NoteQuarantined(const std::string& worker,
                                 const std::vector<v1::SessionRef>& refs) {
  for (const v1::SessionRef& ref : refs) {
    absl::StatusOr<SessionId> id = ParseSessionId(ref.session_id());
    if (!id.ok()) continue;
    {
      absl::MutexLock lock(&mu_);
      if (quarantined_.count(*id)) continue;
    }
    // Only a session the journal still gives to that worker (one rebuilt elsewhere already, or
    // closed, is not the worker's to report).
    absl::StatusOr<SessionRecord> rec = journal_->GetSession(*id);
    if (!rec.ok() || rec->worker != worker) continue;
    log::Warn("worker reports a damaged session: rebuilding it from the journal",
              {{"worker", worker}, {"session", id->ToHex()}});
    absl::MutexLock lock(&mu_);
    quarantined_.emplace(*id, worker);
  }
}

void RouterCore::NoteBehind(const std::string& worker, const std::vector<v1::SessionRef>& refs,
                            const std::vector<uint32_t>& turns) {
  for (size_t i = 0; i < refs.size() && i < turns.size(); ++i) {
    absl::StatusOr<SessionId> id = ParseSessionId(refs[i].session_id());
    if (!id.ok()) continue;
    absl::StatusOr<SessionRecord> rec = journal_->GetSession(*id);
    if (!rec.ok() || rec->worker != worker || rec->epoch != refs[i].epoch()) continue;
    absl::StatusOr<std::optional<TurnRecord>> last = journal_->LastTurn(*id);
    if (!last.ok() || !last->has_value() || (*last)->turn <= turns[i]) continue;
    log::Error(
        "a worker's log is behind the journal (its storage lost writes): rebuilding the "
        "session from the journal",
        {{"worker", worker},
         {"session", id->ToHex()},
         {"worker_turns", std::to_string(turns[i])},
         {"journal_turns", std::to_string((*last)->turn)}});
    absl::MutexLock lock(&mu_);
    quarantined_.emplace(*id, worker);
  }
}

absl::StatusOr<bool> RouterCore::RebuildQuarantinedOne(const SessionId& id,
                                                       const std::string& worker,
                                                       absl::Time deadline) {
  const absl::Time started = absl::Now();
  RSD_ASSIGN_OR_RETURN(
      SessionGates::Lock gate,
      gates_.Acquire(id, absl::StrCat("rebuild of a session damaged on worker '", worker, "'"),
                     deadline));
  absl::StatusOr<SessionRecord> rec = journal_->GetSession(id);
  if (absl::IsNotFound(rec.status())) return false;  // closed meanwhile
  RSD_RETURN_IF_ERROR(rec.status());
  if (rec->worker != worker) return false;  // moved meanwhile
  absl::StatusOr<WorkerSnapshot> target =
      registry_->PickTarget(rec->model, rec->model_fingerprint, worker);
  if (!target.ok()) {
    // No other worker: the reporting one takes it back (only the damaged session's data was
    // lost there).
    absl::StatusOr<WorkerSnapshot> self = registry_->Get(worker);
    if (!self.ok() || self->state != WorkerState::kReady) return target.status();
    target = self;
  }
  RSD_RETURN_IF_ERROR(
      Recorded("rebuild", RebuildLocked(*rec, *target, deadline, started), started).status());
  return true;
}

void RouterCore::RebuildQuarantined() {
  std::map<SessionId, std::string> queue;
  {
    absl::MutexLock lock(&mu_);
    queue = quarantined_;
  }
  for (const auto& [id, worker] : queue) {
    absl::StatusOr<bool> done =
        RebuildQuarantinedOne(id, worker, absl::Now() + options_.move_timeout);
    absl::MutexLock lock(&mu_);
    if (done.ok()) {
      quarantined_.erase(id);
      failover_errors_.erase(id);
      if (*done) {
        log::Info("damaged session rebuilt from the journal",
                  {{"session", id.ToHex()}, {"reported_by", worker}});
      }
      continue;
    }
    std::string& last = failover_errors_[id];
    if (last != done.status().message()) {
      last = std::string(done.status().message());
      log::Warn("rebuild of a damaged session failed, retrying",
                {{"session", id.ToHex()}, {"error", done.status().ToString()}});
    }
  }
}

}  // namespace rsd::router
