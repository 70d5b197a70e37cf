// The cold tier: the checkpoint blocks of a ColdStore (RocksDB on local disk) behind the StateTier
// verbs. It never pushes anything out: it is the bottom of a TierChain. Block writes are not
// synced (a crash may lose the latest blocks; the token log, which is, rebuilds them).
#pragma once

#include "storage/cold_store.h"
#include "storage/state_tier.h"

namespace rsd {

// Thread-safe (ColdStore is). Blocks on disk I/O.
class ColdTier final : public StateTier {
 public:
  explicit ColdTier(ColdStore* store) : store_(store) {}  // `store` must outlive the tier

  const char* name() const override { return "cold"; }
  absl::StatusOr<std::vector<Entry>> Offload(const BlockKey& key, std::string value) override;
  absl::StatusOr<std::string> Onboard(const BlockKey& key) override;
  // By reference: the store keeps each distinct value once (ColdStore::AliasBlock).
  absl::StatusOr<std::vector<Entry>> Alias(const BlockKey& from, const BlockKey& to) override;
  absl::Status Evict(const BlockKey& key) override;
  absl::Status EvictSession(const SessionId& session, uint32_t first_block = 0) override;
  absl::Status Export(const SessionId& session, BlockVisitor fn) override;
  absl::StatusOr<bool> HoldsSession(const SessionId& session) override;
  // The distinct values' bytes (a value several keys share counts once); a session's own bytes
  // (each of its blocks, shared or not) are counted on demand.
  size_t bytes_used() const override { return static_cast<size_t>(store_->content_stats().bytes); }
  absl::StatusOr<size_t> SessionBytes(const SessionId& session) override;

 private:
  ColdStore* store_;
};

}  // namespace rsd
