// Sessions idle past twice their TTL leave the journal (RouterCore::ExpireIdleSessions): their
// worker deletes them at that age too (SessionManager::ExpireIdle), and a session the router kept
// would go on counting against its tenant's quotas.
#include "absl/strings/str_cat.h"
#include "router/router_core.h"
#include "storage/common/log.h"
#include "storage/common/status.h"

namespace rsd::router {

absl::StatusOr<absl::Time> RouterCore::LastActive(const SessionRecord& rec) {
  RSD_ASSIGN_OR_RETURN(std::optional<TurnRecord> last, journal_->LastTurn(rec.id));
  return absl::FromUnixMillis(last.has_value() ? last->committed_unix_ms : rec.created_unix_ms);
}

int RouterCore::ExpireIdleSessions(absl::Time now) {
  auto expired = [&](const SessionRecord& rec) {
    if (rec.ttl_seconds == 0) return false;
    absl::StatusOr<absl::Time> active = LastActive(rec);
    return active.ok() && now - *active >= absl::Seconds(2 * int64_t{rec.ttl_seconds});
  };
  int closed = 0;
  std::optional<SessionId> after;
  for (bool more = true; more;) {
    absl::StatusOr<std::vector<SessionRecord>> page = journal_->ListSessionsPage(
        after.has_value() ? &*after : nullptr, 500,
        [](const SessionRecord& r) { return r.ttl_seconds > 0; }, &more);
    if (!page.ok()) {
      log::Warn("TTL expiry: journal scan failed", {{"error", page.status().ToString()}});
      return closed;
    }
    if (page->empty()) break;
    after = page->back().id;
    for (const SessionRecord& candidate : *page) {
      if (!expired(candidate)) continue;
      // A held gate: a turn or a move is under way, so the session is not idle. Next scan.
      absl::StatusOr<SessionGates::Lock> gate = gates_.Acquire(candidate.id, "expiry", absl::Now());
      if (!gate.ok()) continue;
      absl::StatusOr<SessionRecord> rec = journal_->GetSession(candidate.id);
      if (!rec.ok() || !expired(*rec)) continue;  // closed, or a turn ran meanwhile
      const absl::Status st = CloseLocked(*rec, absl::Now() + options_.worker_call_timeout);
      if (st.ok()) {
        ++closed;
        log::Info("session expired: idle for twice its TTL",
                  {{"session", rec->id.ToHex()},
                   {"tenant", rec->tenant},
                   {"ttl_seconds", absl::StrCat(rec->ttl_seconds)}});
      } else {
        log::Warn("TTL expiry: close failed, retried on the next scan",
                  {{"session", rec->id.ToHex()}, {"error", st.ToString()}});
      }
    }
  }
  return closed;
}

}  // namespace rsd::router
