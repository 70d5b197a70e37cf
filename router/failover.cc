// Failover (DESIGN.md section 5, "Failover"): the sessions of a dead (or manually failed) worker
// are rebuilt on another ready worker of their model from the router's journal alone: the router
// writes a token-only state stream (the committed turns' log tokens) into the target's
// ImportSession, then switches the owner with epoch + 1. A monitor thread does it for workers that
// miss heartbeats; a worker that comes back registers again and is told to drop what it lost.
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "proto/state_stream.h"
#include "router/router_core.h"
#include "storage/common/log.h"
#include "storage/common/status.h"

namespace rsd::router {
namespace {

absl::Status Prefixed(const absl::Status& s, const std::string& what) {
  return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
}

}  // namespace

absl::StatusOr<std::vector<v1::StateChunk>> TokenStateStream(const SessionRecord& session,
                                                             const std::vector<TurnRecord>& turns,
                                                             uint64_t new_epoch,
                                                             const std::string& model_fingerprint) {
  SessionState state;
  state.id = session.id;
  state.attrs.tenant = session.tenant;
  state.attrs.ttl_seconds = session.ttl_seconds;
  state.attrs.pin = session.pin;
  state.attrs.priority = session.priority;
  state.model_fingerprint = model_fingerprint;
  state.form = SpillForm::kTokens;
  for (const TurnRecord& t : turns) {
    if (t.log_tokens.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "session ", session.id.ToHex(), ": turn ", t.turn,
          " has no log tokens in the router's journal (journaled before migration support), so "
          "the session cannot be rebuilt from the journal"));
    }
    state.tokens.insert(state.tokens.end(), t.log_tokens.begin(), t.log_tokens.end());
    const int64_t end = static_cast<int64_t>(state.tokens.size());
    if (t.history_tokens != 0 && t.history_tokens != end) {
      return absl::FailedPreconditionError(absl::StrCat(
          "session ", session.id.ToHex(), ": the log tokens of turns 1..", t.turn, " add up to ",
          end, " tokens but worker '", t.worker, "' reported a history of ", t.history_tokens,
          " after turn ", t.turn, "; the session cannot be rebuilt from the journal"));
    }
    state.turn_ends.push_back(end);
  }
  std::vector<v1::StateChunk> out;
  RSD_RETURN_IF_ERROR(WriteStateStream(std::move(state), new_epoch, [&](const v1::StateChunk& c) {
    out.push_back(c);
    return true;
  }));
  return out;
}

absl::StatusOr<v1::MigrateResponse> RouterCore::RebuildLocked(const SessionRecord& session,
                                                              const WorkerSnapshot& target,
                                                              absl::Time deadline,
                                                              absl::Time started) {
  const std::string what =
      absl::StrCat("fail over session ", session.id.ToHex(), " from worker '", session.worker,
                   "' (epoch ", session.epoch, ") to worker '", target.desc.id, "'");
  if (!session.model_fingerprint.empty() &&
      session.model_fingerprint != target.desc.model_fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": the session's model fingerprint is '", session.model_fingerprint,
        "', the worker's is '", target.desc.model_fingerprint, "'"));
  }
  RSD_ASSIGN_OR_RETURN(std::vector<TurnRecord> turns, journal_->ListTurns(session.id));
  absl::StatusOr<std::vector<v1::StateChunk>> chunks =
      TokenStateStream(session, turns, session.epoch + 1, target.desc.model_fingerprint);
  if (!chunks.ok()) return Prefixed(chunks.status(), what);
  size_t i = 0;
  auto next = [&](v1::StateChunk* chunk) -> absl::StatusOr<bool> {
    if (i == chunks->size()) return false;
    *chunk = (*chunks)[i++];
    return true;
  };
  absl::StatusOr<v1::ImportSessionResponse> imported = Import(target, deadline, next);
  if (!imported.ok()) return Prefixed(imported.status(), what);
  absl::StatusOr<v1::MigrateResponse> out =
      Switch(session, target, *imported, "journal", deadline, started);
  if (!out.ok()) return Prefixed(out.status(), what);
  return out;
}

absl::StatusOr<std::optional<v1::MigrateResponse>> RouterCore::FailoverOne(
    const SessionId& id, const std::string& from, absl::Time deadline) {
  using Moved = std::optional<v1::MigrateResponse>;
  const absl::Time started = absl::Now();
  RSD_ASSIGN_OR_RETURN(
      SessionGates::Lock gate,
      gates_.Acquire(id, absl::StrCat("failover from worker '", from, "'"), deadline));
  absl::StatusOr<SessionRecord> rec = journal_->GetSession(id);
  if (absl::IsNotFound(rec.status())) return Moved();  // closed meanwhile
  RSD_RETURN_IF_ERROR(rec.status());
  if (rec->worker != from) return Moved();  // moved meanwhile
  absl::StatusOr<WorkerSnapshot> target =
      registry_->PickTarget(rec->model, rec->model_fingerprint, from);
  if (!target.ok()) {
    return Prefixed(target.status(), absl::StrCat("fail over session ", id.ToHex(),
                                                  " from worker '", from, "'"));
  }
  RSD_ASSIGN_OR_RETURN(
      v1::MigrateResponse m,
      Recorded("failover", RebuildLocked(*rec, *target, deadline, started), started));
  return Moved(std::move(m));
}

absl::StatusOr<std::vector<v1::MigrateResponse>> RouterCore::Failover(const std::string& worker,
                                                                      absl::Time deadline) {
  // Nothing new goes there; its turns in flight end now rather than at their deadlines.
  RSD_RETURN_IF_ERROR(registry_->SetCordoned(worker, true).status());
  CancelTurnsOn(worker);
  std::vector<v1::MigrateResponse> moved;
  std::vector<std::string> failed;
  absl::StatusCode first = absl::StatusCode::kOk;
  for (const SessionId& id : SessionsOwnedBy(worker)) {
    const absl::Time until =
        deadline < absl::Now() + options_.move_timeout ? deadline
                                                       : absl::Now() + options_.move_timeout;
    absl::StatusOr<std::optional<v1::MigrateResponse>> one = FailoverOne(id, worker, until);
    if (!one.ok()) {
      if (first == absl::StatusCode::kOk) first = one.status().code();
      failed.push_back(std::string(one.status().message()));
    } else if (one->has_value()) {
      moved.push_back(std::move(**one));
    }
  }
  if (!failed.empty()) {
    return absl::Status(first, absl::StrCat("failover of worker '", worker, "': moved ",
                                            moved.size(), " sessions, ", failed.size(),
                                            " could not be moved: ", absl::StrJoin(failed, "; ")));
  }
  return moved;
}

void RouterCore::FailoverDeadWorkers() {
  std::vector<std::string> dead = registry_->Missing();
  for (const WorkerSnapshot& w : registry_->List()) {
    if (w.state == WorkerState::kDead && w.sessions_placed > 0) dead.push_back(w.desc.id);
  }
  for (const std::string& worker : dead) {
    CancelTurnsOn(worker);
    for (const SessionId& id : SessionsOwnedBy(worker)) {
      // A short wait for the gate: a session stuck behind a turn is retried on the next scan.
      const absl::Time until = absl::Now() + options_.move_timeout;
      absl::StatusOr<std::optional<v1::MigrateResponse>> one = FailoverOne(id, worker, until);
      absl::MutexLock lock(&mu_);
      if (one.ok()) {
        failover_errors_.erase(id);
        continue;
      }
      std::string& last = failover_errors_[id];
      if (last != one.status().message()) {
        last = std::string(one.status().message());
        log::Warn("automatic failover failed, retrying",
                  {{"session", id.ToHex()}, {"error", one.status().ToString()}});
      }
    }
  }
}

void RouterCore::StartFailoverMonitor() {
  RSD_CHECK(!monitor_.joinable());
  monitor_ = std::thread([this] { MonitorLoop(); });
}

void RouterCore::MonitorLoop() {
  absl::Time last_expiry = absl::Now();
  for (;;) {
    {
      absl::MutexLock lock(&monitor_mu_);
      monitor_mu_.AwaitWithTimeout(absl::Condition(&stop_monitor_),
                                   options_.failover_scan_interval);
      if (stop_monitor_) return;
    }
    FailoverDeadWorkers();
    RebuildQuarantined();
    CloseLateCopies(absl::Now());
    if (absl::Now() - last_expiry >= options_.expiry_scan_interval) {
      last_expiry = absl::Now();
      ExpireIdleSessions(last_expiry);
    }
    monitor_rounds_.fetch_add(1);
  }
}

RouterCore::~RouterCore() {
  {
    absl::MutexLock lock(&monitor_mu_);
    stop_monitor_ = true;
  }
  if (monitor_.joinable()) monitor_.join();
}

void RouterCore::TrackTurn(const std::string& worker, InflightTurn* turn) {
  absl::MutexLock lock(&mu_);
  inflight_.emplace(worker, turn);
}

void RouterCore::UntrackTurn(const std::string& worker, InflightTurn* turn) {
  absl::MutexLock lock(&mu_);
  auto [begin, end] = inflight_.equal_range(worker);
  for (auto it = begin; it != end; ++it) {
    if (it->second == turn) {
      inflight_.erase(it);
      return;
    }
  }
}

void RouterCore::CancelTurnsOn(const std::string& worker) {
  absl::MutexLock lock(&mu_);
  auto [begin, end] = inflight_.equal_range(worker);
  for (auto it = begin; it != end; ++it) {
    it->second->worker_died = true;
    it->second->call->Cancel();
  }
}

std::vector<v1::SessionRef> RouterCore::SessionsToDrop(const std::string& worker,
                                                       const std::vector<v1::SessionRef>& reported) {
  std::vector<v1::SessionRef> drop;
  for (const v1::SessionRef& ref : reported) {
    absl::StatusOr<SessionId> id = ParseSessionId(ref.session_id());
    if (!id.ok()) {
      drop.push_back(ref);  // not a session the router could know
      continue;
    }
    // A copy no newer than the journal's that is not the journal's own (owner and epoch) is stale
    // whatever is in progress: epochs only grow, and a move or rebuild in flight gives its target
    // a newer one. Decided without the session's gate, which another worker's registration (all
    // re-register at once after a router restart), a turn or a move may hold.
    absl::StatusOr<SessionRecord> rec = journal_->GetSession(*id);
    if (rec.ok() && ref.epoch() <= rec->epoch &&
        !(rec->worker == worker && ref.epoch() == rec->epoch)) {
      drop.push_back(ref);
      continue;
    }
    // Unknown to the journal, or newer than it: a create, a move or a rebuild may be about to
    // record it, and holds the gate meanwhile. Leave it then; otherwise decide under the gate.
    absl::StatusOr<SessionGates::Lock> gate =
        gates_.Acquire(*id, absl::StrCat("registration of worker '", worker, "'"), absl::Now());
    if (!gate.ok()) continue;
    rec = journal_->GetSession(*id);
    if (absl::IsNotFound(rec.status())) {
      drop.push_back(ref);
    } else if (!rec.ok()) {
      log::Warn(
          "registration: journal lookup failed, session kept",
          {{"worker", worker}, {"session", ref.session_id()}, {"error", rec.status().ToString()}});
    } else if (rec->worker != worker || ref.epoch() < rec->epoch) {
      drop.push_back(ref);
    }
  }
  return drop;
}

}  // namespace rsd::router
