// A StateTier that wraps another and injects faults, for tests of what a failing tier costs:
// values corrupted on the way out (one flipped bit), onboards or offloads that fail with a given
// status. Faults are set per key or for every key; thread-safe.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "storage/state_tier.h"

namespace rsd::testing {

class FaultyTier final : public StateTier {
 public:
  explicit FaultyTier(StateTier* inner) : inner_(inner) {}  // `inner` must outlive it

  // Onboard of `key` returns its value with one bit flipped (the codec's checksum catches it).
  void CorruptOnOnboard(const BlockKey& key);
  // Onboard of `key` (every key if nullopt) fails with `status`.
  void FailOnboard(std::optional<BlockKey> key, absl::Status status);
  // Every Offload fails with `status` (OK: clears it).
  void FailOffloads(absl::Status status);
  int onboards() const;  // Onboard calls seen
  int faults() const;    // faults delivered

  const char* name() const override { return inner_->name(); }
  absl::StatusOr<std::vector<Entry>> Offload(const BlockKey& key, std::string value) override;
  absl::StatusOr<std::string> Onboard(const BlockKey& key) override;
  absl::Status Evict(const BlockKey& key) override { return inner_->Evict(key); }
  absl::Status EvictSession(const SessionId& session, uint32_t first_block = 0) override {
    return inner_->EvictSession(session, first_block);
  }
  absl::Status Export(const SessionId& session, BlockVisitor fn) override {
    return inner_->Export(session, fn);
  }
  absl::StatusOr<bool> HoldsSession(const SessionId& session) override {
    return inner_->HoldsSession(session);
  }
  size_t bytes_used() const override { return inner_->bytes_used(); }
  absl::StatusOr<size_t> SessionBytes(const SessionId& session) override {
    return inner_->SessionBytes(session);
  }

 private:
  StateTier* inner_;
  mutable absl::Mutex mu_;
  std::set<BlockKey> corrupt_ ABSL_GUARDED_BY(mu_);
  std::map<BlockKey, absl::Status> fail_key_ ABSL_GUARDED_BY(mu_);
  absl::Status fail_all_onboards_ ABSL_GUARDED_BY(mu_);
  absl::Status fail_offloads_ ABSL_GUARDED_BY(mu_);
  int onboards_ ABSL_GUARDED_BY(mu_) = 0;
  int faults_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace rsd::testing
