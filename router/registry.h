// The router's worker registry and placement (DESIGN.md section 5). Workers register and heartbeat
// their status; a worker that has not heartbeated for `heartbeat_timeout` is dead, one whose
// health says NOT_SERVING (its scheduler makes no progress) is unhealthy. Placement picks, among
// ready workers serving the requested model, the one with the most estimated free hot+warm bytes,
// then the fewest queued+running turns, then the fewest sessions placed, then the smallest id. The
// estimate is the free bytes of the last heartbeat less, for each session placed there since,
// the worker's mean bytes per session (a sixty-fourth of its bytes while it has none), so that a
// burst of creates between two heartbeats spreads instead of landing on one worker.
//
// Cache-aware placement (issue #15): a create may carry the chain keys of its first turn's leading
// chunks (PrefixHint, from a worker's PromptKeys). A worker matches m tokens of it when its
// heartbeat's prefix keys (the leading hot chunks of its resident sessions) or a session placed
// there in the last kRecentPrefixSeconds hold the key covering m tokens. Then the cost of a ready
// worker is queued + running / 2 - m / kReuseTokensPerTurn, in turns: a reused prefix of 128
// tokens is worth one queued turn (about a short turn's prefill and first steps on the default
// model) or two running ones (running turns share the batch, they slow a new turn less than a
// queue does). The lowest cost wins, ties go by the order above, and a worker whose estimated free
// bytes are gone gets no credit for a match. Without a hint the order above decides alone.
//
// No gRPC here: the service layer translates rsd.v1.WorkerStatus into WorkerDescriptor.
// Thread-safe (one mutex); no method blocks on I/O. The clock is injected (tests use a fake one).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace rsd::router {

// The time source (a real seam: tests drive it by hand).
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() = 0;
};

class SystemClock final : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
};

struct WorkerLoadInfo {
  int64_t hot_bytes_total = 0;
  int64_t hot_bytes_free = 0;
  int64_t shared_bytes = 0, saved_bytes = 0;  // hot bytes in shared blocks; bytes sharing saves
  int64_t cold_bytes = 0, cold_saved_bytes = 0;  // RocksDB's distinct values; what that saves
  int64_t warm_bytes_total = 0;
  int64_t warm_bytes_free = 0;
  int32_t queue_depth = 0;
  int32_t running = 0;
  int32_t sessions = 0;  // as the worker counts them
  int32_t queue_limit = 0;
};

struct WorkerRates {
  double prefill_tokens_per_s = 0;
  double residual_tokens_per_s = 0;
  double kv_copy_tokens_per_s = 0;
};

// The first turn's prefix keys of a new session: (key, tokens it covers), tokens ascending.
struct PrefixHint {
  std::vector<std::pair<std::string, int64_t>> keys;
};
inline constexpr int64_t kReuseTokensPerTurn = 128;
inline constexpr double kRecentPrefixSeconds = 10;

// What a worker says about itself (Register / Heartbeat).
struct WorkerDescriptor {
  std::string id;
  std::string address;  // host:port the router dials
  std::string model;
  std::string model_fingerprint;
  std::string numerics_fingerprint;
  int32_t context_length = 0;
  WorkerLoadInfo load;
  WorkerRates rates;
  bool serving = true;  // health SERVING (false: NOT_SERVING, the scheduler makes no progress)
  // What it computes on (placement only matches numerics fingerprints; this is for operators).
  std::string device_kind, device_name;
  int32_t device_index = 0;
  int64_t device_memory_total = 0, device_memory_limit = 0, device_memory_used = 0;
  double device_memory_bandwidth = 0;
  // Chain keys of its resident sessions' leading hot chunks; the registry moves them into its
  // index (snapshots carry none).
  std::vector<std::string> prefix_keys;
};

// kDraining: cordoned by a drain (its sessions are being moved away); placement skips it like a
// cordoned worker. kUnhealthy: it reports NOT_SERVING; placement skips it, its sessions stay.
// kDead wins over all, then draining, cordoned, unhealthy.
enum class WorkerState { kReady, kCordoned, kDraining, kDead, kUnhealthy };
const char* WorkerStateName(WorkerState s);

struct WorkerSnapshot {
  WorkerDescriptor desc;
  WorkerState state = WorkerState::kReady;
  double seconds_since_heartbeat = 0;
  int64_t sessions_placed = 0;  // sessions the router's journal places there
  int64_t placed_since_heartbeat = 0;  // of which placed since its last status
};

struct ModelSummary {
  std::string name;
  std::string fingerprint;
  int32_t context_length = 0;
  std::vector<std::string> workers;  // non-dead workers serving it, by id
};

class Registry {
 public:
  // `clock` must outlive the registry.
  Registry(Clock* clock, absl::Duration heartbeat_timeout);

  // Adds or replaces the worker (a re-registration keeps its cordon and placed-session count).
  // INVALID_ARGUMENT if the id or address is empty.
  absl::Status Register(const WorkerDescriptor& desc);
  // Updates a known worker; false if the id is unknown, its address or model changed, or it was
  // dead (no heartbeat for longer than the timeout): the worker must register again.
  bool Heartbeat(const WorkerDescriptor& desc);

  // NOT_FOUND "unknown worker 'W'; known: ..." if never registered.
  absl::StatusOr<WorkerSnapshot> Get(const std::string& id);
  // Every registered worker (dead ones too), by id.
  std::vector<WorkerSnapshot> List();

  // Chooses a worker for a new session of `model` ("" = the only model, or the first registered
  // model that has a ready worker) and counts the session as placed there. NOT_FOUND "unknown model
  // 'X'; known: ..." if no worker ever served `model`; UNAVAILABLE naming the model if none of its
  // workers is ready (all dead or cordoned), or if no worker is registered at all. Workers in
  // `exclude` (ids a create could not reach just now) are passed over.
  // With `hint`, placement is cache-aware (above); the chosen worker is remembered for its keys.
  // `prefix_tokens` (optional) gets the tokens the chosen worker matched.
  absl::StatusOr<WorkerSnapshot> Place(const std::string& model,
                                       const std::vector<std::string>& exclude = {},
                                       const PrefixHint* hint = nullptr,
                                       int64_t* prefix_tokens = nullptr);
  // Adjusts the placed-session count of a worker (a failed open, a close; a restarted router
  // seeds the counts from its journal). Unknown ids are remembered for when they register.
  void AddPlaced(const std::string& id, int64_t delta);

  // NOT_FOUND as Get. Uncordoning also ends a drain.
  absl::StatusOr<WorkerSnapshot> SetCordoned(const std::string& id, bool cordoned);
  // NOT_FOUND as Get.
  absl::StatusOr<WorkerSnapshot> SetDraining(const std::string& id, bool draining);

  // The best ready worker of `model` ("" as in Place) other than `exclude` to move a session to
  // (the placement order; counts nothing). When `model_fingerprint` is not empty, only workers with
  // that model fingerprint qualify. UNAVAILABLE naming the model and the counts if none does.
  absl::StatusOr<WorkerSnapshot> PickTarget(const std::string& model,
                                            const std::string& model_fingerprint,
                                            const std::string& exclude);

  // Workers that sessions are placed on but that have not registered for a heartbeat timeout since
  // the registry started (a restarted router whose worker died meanwhile): as good as dead.
  std::vector<std::string> Missing();

  // Distinct models of non-dead workers, by name.
  std::vector<ModelSummary> Models();

 private:
  struct Entry {
    WorkerDescriptor desc;
    absl::Time last_heartbeat;
    bool cordoned = false;
    bool draining = false;
    int64_t placed_since_heartbeat = 0;
    absl::flat_hash_set<std::string> prefix_keys;
  };
  struct RecentPrefix {
    std::string worker;
    absl::Time at;
  };
  // The tokens of `hint` worker `e` holds (0: none).
  int64_t MatchedLocked(const Entry& e, const PrefixHint& hint) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RememberLocked(const std::string& worker, const PrefixHint& hint)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void TakeKeys(Entry& e);
  WorkerSnapshot SnapshotLocked(const Entry& e) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string KnownWorkersLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What "" names: the first registered model with a ready worker (else the first registered).
  std::string DefaultModelLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Clock* const clock_;
  const absl::Duration heartbeat_timeout_;
  const absl::Time started_;
  absl::Mutex mu_;
  std::map<std::string, Entry> workers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> placed_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> models_seen_ ABSL_GUARDED_BY(mu_);  // in first-registration order
  absl::flat_hash_map<std::string, RecentPrefix> recent_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rsd::router
