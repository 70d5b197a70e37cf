// Per-session gates (DESIGN.md section 5, "Migration", "Failover"): a turn holds its session's gate
// for its whole duration; migrate and failover hold it while they move the session. So a session
// changes owner only at a turn boundary, and a turn that arrives meanwhile waits, then reads the new
// owner from the journal. Turns of one session are serialized by the router.
//
// Thread-safe. Acquire blocks until the gate is free, the deadline passes or `cancelled` returns
// true (polled). Gates of sessions nobody holds or waits for are forgotten.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storage/common/ids.h"

namespace rsd::router {

class SessionGates {
 private:
  struct Gate {
    bool held = false;
    int users = 0;  // holders and waiters; the entry goes when it drops to 0
    std::string holder;
  };

 public:
  // Held until destroyed (move-only).
  class Lock {
   public:
    Lock(Lock&& other) noexcept : gates_(other.gates_), id_(other.id_) { other.gates_ = nullptr; }
    Lock& operator=(Lock&&) = delete;
    Lock(const Lock&) = delete;
    ~Lock() { Release(); }
    // Releases the gate now (idempotent).
    void Release();

   private:
    friend class SessionGates;
    Lock(SessionGates* gates, const SessionId& id) : gates_(gates), id_(id) {}
    SessionGates* gates_;
    SessionId id_;
  };

  // `what` (e.g. "turn 'abc'", "migration to 'w2'") names the holder in the errors of others.
  // DEADLINE_EXCEEDED naming the session and the holder if the deadline passes first; CANCELLED if
  // `cancelled` says so.
  absl::StatusOr<Lock> Acquire(const SessionId& id, const std::string& what, absl::Time deadline,
                               const std::function<bool()>& cancelled = nullptr);

  // Whether the session's gate is held now (tests).
  bool Held(const SessionId& id);

 private:
  void Release(const SessionId& id);

  absl::Mutex mu_;
  std::map<SessionId, Gate> gates_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rsd::router
