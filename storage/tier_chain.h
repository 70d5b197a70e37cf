// The tiers below the hot pool, top first (warm, then cold: DESIGN.md section 4). A block is
// offloaded into the top tier and whatever a tier pushes out moves down to the next; what the last
// tier pushes out is dropped (without a cold tier, the token log still rebuilds it). Onboard looks
// from the top down and says which tier answered. The one place overflow and demotion happen.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/state_tier.h"

namespace rsd {

// Thread-safe as far as its tiers are (all of ours are); Add only before use.
class TierChain {
 public:
  // Appends `tier` at the bottom.
  void Add(std::unique_ptr<StateTier> tier);
  size_t depth() const { return tiers_.size(); }
  StateTier* tier(size_t level) const { return tiers_.at(level).get(); }

  // Into the top tier; overflow moves down. A chain with no tier drops the value.
  absl::Status Offload(const BlockKey& key, std::string value);
  // From the highest tier that holds the key; `from` (if not null) gets that tier's name.
  // NOT_FOUND if no tier does; a tier's read error (DATA_LOSS, INTERNAL) is returned as is.
  absl::StatusOr<std::string> Onboard(const BlockKey& key, const char** from = nullptr);
  // `from`'s value also under `to`: shared in the tier that holds `from` where that tier can share
  // (warm: one buffer under both keys; cold: one stored value), else copied into the top tier.
  // Returns the bytes copied (0: shared).
  absl::StatusOr<size_t> Alias(const BlockKey& from, const BlockKey& to);
  // From every tier.
  absl::Status Evict(const BlockKey& key);
  absl::Status EvictSession(const SessionId& session, uint32_t first_block = 0);
  // Moves the session's blocks held in tier `level` into the tiers below it.
  absl::Status Demote(const SessionId& session, size_t level = 0);
  // Each block of the session once, in key order; a block held by several tiers is the highest
  // tier's copy (the freshest).
  absl::Status Export(const SessionId& session, BlockVisitor fn);
  // Offloads a batch (a session received from another worker).
  absl::Status Import(std::vector<StateTier::Entry> entries);
  // The name of the lowest tier that holds any block of the session; nullptr if none does.
  absl::StatusOr<const char*> DeepestHolding(const SessionId& session) const;
  // Bytes of the session in tier `level` (values and keys as the tier counts them).
  absl::StatusOr<size_t> SessionBytes(const SessionId& session, size_t level) const;

 private:
  // Offloads `entries` into tiers [level, ...), each tier's overflow into the next.
  absl::Status OffloadFrom(size_t level, std::vector<StateTier::Entry> entries);
  std::vector<std::unique_ptr<StateTier>> tiers_;
};

}  // namespace rsd
