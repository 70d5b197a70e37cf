#include "router/router_core.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "storage/common/status.h"

namespace rsd::router {

RouterCore::RouterCore(Journal* journal, Registry* registry, WorkerClients* workers,
                       RouterOptions options)
    : journal_(journal),
      registry_(registry),
      workers_(workers),
      options_(std::move(options)),
      quotas_(options_.quotas) {}

absl::Status RouterCore::LoadJournal() {
  RSD_ASSIGN_OR_RETURN(std::vector<SessionRecord> sessions, journal_->ListSessions());
  for (const SessionRecord& s : sessions) {
    registry_->AddPlaced(s.worker, 1);
    RSD_ASSIGN_OR_RETURN(std::optional<TurnRecord> last, journal_->LastTurn(s.id));
    quotas_.AddExisting(s.tenant, s.pin, last.has_value() ? last->history_tokens : 0);
  }
  return absl::OkStatus();
}

absl::Time RouterCore::UnaryDeadline(absl::Time caller_deadline) const {
  return std::min(caller_deadline, absl::Now() + options_.worker_call_timeout);
}

absl::StatusOr<SessionRecord> RouterCore::LoadSession(const std::string& hex,
                                                      const std::string* tenant) {
  RSD_ASSIGN_OR_RETURN(SessionId id, ParseSessionId(hex));
  RSD_ASSIGN_OR_RETURN(SessionRecord rec, journal_->GetSession(id));
  if (tenant != nullptr && rec.tenant != *tenant) {
    // The same answer as for an absent session: ids of other tenants are not revealed.
    return absl::NotFoundError(absl::StrCat("unknown session ", id.ToHex()));
  }
  return rec;
}

absl::StatusOr<WorkerSnapshot> RouterCore::Owner(const SessionRecord& session) {
  absl::StatusOr<WorkerSnapshot> w = registry_->Get(session.worker);
  if (!w.ok()) {
    return absl::UnavailableError(absl::StrCat("worker '", session.worker, "' owning session ",
                                               session.id.ToHex(), " is not registered"));
  }
  if (w->state == WorkerState::kDead) {
    return absl::UnavailableError(absl::StrCat(
        "worker '", session.worker, "' owning session ", session.id.ToHex(),
        " is dead (no heartbeat for ", static_cast<int64_t>(w->seconds_since_heartbeat), " s)"));
  }
  return w;
}

absl::Status RouterCore::WorkerError(const absl::Status& s, const std::string& worker,
                                     const std::string& address) {
  if (absl::IsUnavailable(s)) {
    return absl::UnavailableError(
        absl::StrCat("worker '", worker, "' at ", address, " is unavailable: ", s.message()));
  }
  return s;
}

v1::SessionRef RouterCore::RefOf(const SessionRecord& session) {
  v1::SessionRef ref;
  ref.set_session_id(session.id.ToHex());
  ref.set_tenant(session.tenant);
  ref.set_epoch(session.epoch);
  return ref;
}

void RouterCore::FillOwnership(const SessionRecord& session, v1::SessionInfo* info) {
  info->set_session_id(session.id.ToHex());
  info->set_tenant(session.tenant);
  info->set_model(session.model);
  info->set_worker(session.worker);
  info->set_epoch(session.epoch);
  v1::SessionOptions* o = info->mutable_options();
  o->set_ttl_seconds(session.ttl_seconds);
  o->set_pin(session.pin);
  o->set_priority(session.priority);
}

absl::StatusOr<v1::SessionInfo> RouterCore::FromJournal(const SessionRecord& session) {
  RSD_ASSIGN_OR_RETURN(std::vector<TurnRecord> turns, journal_->ListTurns(session.id));
  v1::SessionInfo info;
  FillOwnership(session, &info);
  info.set_turns(turns.empty() ? 0 : turns.back().turn);
  info.set_token_count(turns.empty() ? 0 : turns.back().history_tokens);
  const int64_t last_ms = turns.empty() ? session.created_unix_ms : turns.back().committed_unix_ms;
  info.set_idle_seconds(std::max<double>(0, (absl::ToUnixMillis(absl::Now()) - last_ms) / 1e3));
  return info;
}

absl::StatusOr<v1::SessionInfo> RouterCore::Describe(const SessionRecord& session,
                                                     absl::Time deadline) {
  absl::StatusOr<WorkerSnapshot> owner = Owner(session);
  if (owner.ok()) {
    absl::StatusOr<v1::SessionInfo> info =
        Worker(*owner)->DescribeSession(RefOf(session), UnaryDeadline(deadline));
    if (info.ok()) {
      FillOwnership(session, &*info);
      return info;
    }
    const absl::Status& s = info.status();
    if (absl::IsNotFound(s)) {
      // The owner lost it (e.g. restarted on an empty data dir): the journal still knows it.
      RSD_ASSIGN_OR_RETURN(v1::SessionInfo info, FromJournal(session));
      info.set_state("missing");
      return info;
    }
    if (!absl::IsUnavailable(s) && !absl::IsDeadlineExceeded(s)) {
      return WorkerError(s, owner->desc.id, owner->desc.address);
    }
  }
  RSD_ASSIGN_OR_RETURN(v1::SessionInfo info, FromJournal(session));
  info.set_state("unreachable");
  return info;
}

void RouterCore::RefreshMetrics() {
  std::map<std::string, int64_t> workers, sessions;
  for (WorkerState st : {WorkerState::kReady, WorkerState::kCordoned, WorkerState::kDraining,
                         WorkerState::kDead, WorkerState::kUnhealthy}) {
    workers[WorkerStateName(st)] = 0;
    sessions[WorkerStateName(st)] = 0;
  }
  for (const WorkerSnapshot& w : registry_->List()) {
    workers[WorkerStateName(w.state)] += 1;
    sessions[WorkerStateName(w.state)] += w.sessions_placed;
  }
  for (const auto& [state, n] : workers) metrics_.SetWorkers(state, static_cast<double>(n));
  for (const auto& [state, n] : sessions) metrics_.SetSessions(state, static_cast<double>(n));
}

}  // namespace rsd::router
