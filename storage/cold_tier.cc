#include "storage/cold_tier.h"

#include <vector>

#include "storage/common/status.h"

namespace rsd {

absl::StatusOr<std::vector<StateTier::Entry>> ColdTier::Offload(const BlockKey& key,
                                                                std::string value) {
  RSD_RETURN_IF_ERROR(store_->PutBlock(key, value));
  return std::vector<Entry>{};
}

absl::StatusOr<std::string> ColdTier::Onboard(const BlockKey& key) { return store_->GetBlock(key); }

absl::Status ColdTier::Evict(const BlockKey& key) { return store_->DeleteBlock(key); }

absl::Status ColdTier::EvictSession(const SessionId& session, uint32_t first_block) {
  std::vector<BlockKey> doomed;
  RSD_RETURN_IF_ERROR(store_->ForEachBlock(session, [&](const BlockKey& key, std::string_view) {
    if (key.block >= first_block) doomed.push_back(key);
    return absl::OkStatus();
  }));
  for (const BlockKey& key : doomed) RSD_RETURN_IF_ERROR(store_->DeleteBlock(key));
  return absl::OkStatus();
}

absl::Status ColdTier::Export(const SessionId& session, BlockVisitor fn) {
  return store_->ForEachBlock(session, fn);
}

absl::StatusOr<bool> ColdTier::HoldsSession(const SessionId& session) {
  bool any = false;
  absl::Status st = store_->ForEachBlock(session, [&](const BlockKey&, std::string_view) {
    any = true;
    return absl::CancelledError("found one");  // the first block answers
  });
  if (!st.ok() && !any) return st;
  return any;
}

absl::StatusOr<size_t> ColdTier::SessionBytes(const SessionId& session) {
  size_t total = 0;
  RSD_RETURN_IF_ERROR(store_->ForEachBlock(session, [&](const BlockKey&, std::string_view v) {
    total += v.size();
    return absl::OkStatus();
  }));
  return total;
}

}  // namespace rsd
