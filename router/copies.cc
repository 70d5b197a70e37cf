// Copies of a session that the journal does not name (DESIGN.md section 5): a move's target after a
// failed move, a source after a switch. The router closes them at once; what it cannot be sure of
// closing — a close that failed, an import whose reply was lost and which may still commit on its
// target until the transfer's deadline — it closes again later under the session's gate, unless
// the journal names the copy by then. Without this such a copy holds the target's memory and
// refuses the next move of the session there until the worker happens to register again.
#include <algorithm>
#include <iterator>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "router/router_core.h"
#include "storage/common/log.h"
#include "storage/common/status.h"

namespace rsd::router {
namespace {

constexpr absl::Duration kCloseTimeout = absl::Seconds(2);
constexpr absl::Duration kRetryAfterFailure = absl::Seconds(5);

}  // namespace

void RouterCore::CloseCopy(const std::string& worker, const v1::SessionRef& ref,
                           absl::Time deadline) {
  const absl::Time until = std::min(deadline, absl::Now() + absl::Seconds(5));
  const absl::Status s = CloseOn(worker, ref, until);
  if (!s.ok() && !absl::IsNotFound(s)) {
    log::Warn("could not drop the old copy (tried again by the monitor)",
              {{"session", ref.session_id()},
               {"epoch", std::to_string(ref.epoch())},
               {"worker", worker},
               {"error", s.ToString()}});
    CloseCopyLater(worker, ref, absl::Now());
  }
}

absl::Status RouterCore::CloseOn(const std::string& worker, const v1::SessionRef& ref,
                                 absl::Time until) {
  absl::StatusOr<WorkerSnapshot> w = registry_->Get(worker);
  if (!w.ok() || w->state == WorkerState::kDead) {
    return absl::NotFoundError(
        absl::StrCat("worker '", worker, "' is not serving; its registration drops the copy"));
  }
  return Worker(*w)->CloseSession(ref, until).status();
}

void RouterCore::CloseCopyLater(const std::string& worker, const v1::SessionRef& ref,
                                absl::Time when) {
  absl::MutexLock lock(&mu_);
  late_copies_.push_back({worker, ref, when, ""});
}

void RouterCore::CloseLateCopies(absl::Time now) {
  std::vector<LateCopy> due;
  {
    absl::MutexLock lock(&mu_);
    auto first_due = std::stable_partition(late_copies_.begin(), late_copies_.end(),
                                           [&](const LateCopy& c) { return c.when > now; });
    due.assign(std::make_move_iterator(first_due), std::make_move_iterator(late_copies_.end()));
    late_copies_.erase(first_due, late_copies_.end());
  }
  // The monitor also fails over dead workers: a worker that does not answer costs one call a scan
  // (its other copies wait), and its copies are tried again only after kRetryAfterFailure.
  std::vector<LateCopy> again;
  std::set<std::string> failing;
  for (LateCopy& copy : due) {
    if (failing.count(copy.worker) > 0) {
      copy.when = now + kRetryAfterFailure;
      again.push_back(std::move(copy));
      continue;
    }
    switch (CloseLateCopy(copy)) {
      case LateClose::kSettled:
        continue;
      case LateClose::kWorkerFailed:
        failing.insert(copy.worker);
        copy.when = now + kRetryAfterFailure;
        break;
      case LateClose::kNextScan:
        break;
    }
    again.push_back(std::move(copy));
  }
  absl::MutexLock lock(&mu_);
  std::move(again.begin(), again.end(), std::back_inserter(late_copies_));
}

RouterCore::LateClose RouterCore::CloseLateCopy(LateCopy& copy) {
  absl::StatusOr<SessionId> id = ParseSessionId(copy.ref.session_id());
  if (!id.ok()) return LateClose::kSettled;
  // No wait: a turn or a move holding the gate is tried again on the next scan.
  absl::StatusOr<SessionGates::Lock> gate = gates_.Acquire(
      *id, absl::StrCat("closing a copy on worker '", copy.worker, "' the journal does not name"),
      absl::Now());
  if (!gate.ok()) return LateClose::kNextScan;
  absl::StatusOr<SessionRecord> rec = journal_->GetSession(*id);
  if (rec.ok() && rec->worker == copy.worker && rec->epoch == copy.ref.epoch()) {
    return LateClose::kSettled;
  }
  if (!rec.ok() && !absl::IsNotFound(rec.status())) return LateClose::kNextScan;
  const absl::Status s = CloseOn(copy.worker, copy.ref, absl::Now() + kCloseTimeout);
  if (s.ok()) {
    late_copies_closed_.fetch_add(1);
    log::Info("closed a copy the journal does not name",
              {{"session", copy.ref.session_id()},
               {"epoch", std::to_string(copy.ref.epoch())},
               {"worker", copy.worker}});
    return LateClose::kSettled;
  }
  // Gone (or its worker dead: its registration drops it), or the worker holds the session at
  // another epoch: not this copy.
  if (absl::IsNotFound(s) || absl::IsFailedPrecondition(s)) return LateClose::kSettled;
  if (copy.last_error != s.message()) {
    copy.last_error = std::string(s.message());
    log::Warn("could not close a copy the journal does not name (trying again)",
              {{"session", copy.ref.session_id()},
               {"epoch", std::to_string(copy.ref.epoch())},
               {"worker", copy.worker},
               {"error", s.ToString()}});
  }
  return LateClose::kWorkerFailed;
}

}  // namespace rsd::router
