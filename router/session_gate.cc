#include "router/session_gate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"

namespace rsd::router {
namespace {
// How often a waiter checks `cancelled`.
constexpr absl::Duration kPoll = absl::Milliseconds(50);
}  // namespace

void SessionGates::Lock::Release() {
  if (gates_ != nullptr) gates_->Release(id_);
  gates_ = nullptr;
}

absl::StatusOr<SessionGates::Lock> SessionGates::Acquire(const SessionId& id,
                                                         const std::string& what,
                                                         absl::Time deadline,
                                                         const std::function<bool()>& cancelled) {
  absl::MutexLock lock(&mu_);
  Gate* gate = &gates_[id];  // std::map: the reference stays valid while the entry exists
  ++gate->users;
  while (gate->held) {
    const absl::Time now = absl::Now();
    const bool gave_up_deadline = now >= deadline;
    const bool gave_up_cancel = !gave_up_deadline && cancelled && cancelled();
    if (gave_up_deadline || gave_up_cancel) {
      const std::string holder = gate->holder;
      if (--gate->users == 0) gates_.erase(id);
      if (gave_up_cancel) {
        return absl::CancelledError(absl::StrCat("session ", id.ToHex(), ": ", what,
                                                 " cancelled while waiting for ", holder));
      }
      return absl::DeadlineExceededError(absl::StrCat("session ", id.ToHex(), ": ", what,
                                                      " gave up waiting for ", holder,
                                                      " (deadline passed)"));
    }
    const absl::Time until = std::min(deadline, now + kPoll);
    mu_.AwaitWithDeadline(absl::Condition(
                              +[](Gate* g) { return !g->held; }, gate),
                          until);
  }
  gate->held = true;
  gate->holder = what;
  return Lock(this, id);
}

void SessionGates::Release(const SessionId& id) {
  absl::MutexLock lock(&mu_);
  auto it = gates_.find(id);
  RSD_CHECK(it != gates_.end() && it->second.held);
  it->second.held = false;
  it->second.holder.clear();
  if (--it->second.users == 0) gates_.erase(it);
}

bool SessionGates::Held(const SessionId& id) {
  absl::MutexLock lock(&mu_);
  auto it = gates_.find(id);
  return it != gates_.end() && it->second.held;
}

}  // namespace rsd::router
