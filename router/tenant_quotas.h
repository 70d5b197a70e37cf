// Per-tenant quotas (issue #13): how many sessions a tenant may hold, how many of them pinned
// (never spilled), how many of its turns may run at once, and how many tokens of history its
// sessions may hold together (what its state costs in every tier: bytes are tokens times the
// model's bytes per token in the form the state is in), so that one tenant cannot take a cluster's
// journal, placement, workers or storage from the others. A refusal is RESOURCE_EXHAUSTED naming
// the tenant's count, the quota and its flag.
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace rsd::router {

struct QuotaOptions {
  int64_t sessions = 0;  // sessions a tenant may hold (0: unlimited)
  int64_t pinned = 0;    // of which pinned (0: unlimited)
  int64_t turns = 0;     // turns of a tenant running at once (0: unlimited)
  // Tokens of history a tenant's sessions hold together; a turn starting at or over it is
  // refused (0: unlimited). A turn may take the tenant past it by its own length.
  int64_t history_tokens = 0;
};

class TenantQuotas {
 public:
  explicit TenantQuotas(QuotaOptions options) : options_(options) {}

  // A running turn's hold on its tenant's turn quota; released when destroyed. Movable.
  class Turn {
   public:
    Turn() = default;
    Turn(Turn&& other) noexcept { *this = std::move(other); }
    Turn& operator=(Turn&& other) noexcept;
    ~Turn();

   private:
    friend class TenantQuotas;
    Turn(TenantQuotas* quotas, std::string tenant) : quotas_(quotas), tenant_(std::move(tenant)) {}
    TenantQuotas* quotas_ = nullptr;
    std::string tenant_;
  };

  // Counts a session the journal already holds (a restarted router) with its history.
  void AddExisting(const std::string& tenant, bool pinned, int64_t history_tokens = 0);
  // Takes one of the tenant's sessions (and pinned sessions if `pinned`), or RESOURCE_EXHAUSTED.
  absl::Status ReserveSession(const std::string& tenant, bool pinned);
  // Gives one back (a create that failed, a close) with the history it held.
  void ReleaseSession(const std::string& tenant, bool pinned, int64_t history_tokens = 0);
  // A committed turn (delta > 0) or an undo (delta < 0) changed one session's history.
  void AddHistory(const std::string& tenant, int64_t delta);
  // Takes one of the tenant's running turns until the returned hold is destroyed, or
  // RESOURCE_EXHAUSTED.
  absl::StatusOr<Turn> StartTurn(const std::string& tenant);

  int64_t sessions(const std::string& tenant);
  int64_t pinned(const std::string& tenant);
  int64_t turns(const std::string& tenant);
  int64_t history_tokens(const std::string& tenant);

 private:
  void EndTurn(const std::string& tenant);
  struct Counts {
    int64_t sessions = 0;
    int64_t pinned = 0;
    int64_t turns = 0;
    int64_t history_tokens = 0;
  };
  const QuotaOptions options_;
  absl::Mutex mu_;
  std::map<std::string, Counts> counts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rsd::router
