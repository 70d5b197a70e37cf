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

absl::StatusOr<std::vector<StateTier::Entry>> ColdTier::Alias(const BlockKey& from,
                                                              const BlockKey& to) {
  RSD_RETURN_IF_ERROR(store_->AliasBlock(from, to));
  return std::vector<Entry>{};
}

absl::Status ColdTier::Evict(const BlockKey& key) { return store_->DeleteBlock(key); }

absl::Status ColdTier::EvictSession(const SessionId& session, uint32_t first_block) {
  RSD_ASSIGN_OR_RETURN(std::vector<BlockKey> keys, store_->BlockKeys(session));
  for (const BlockKey& key : keys) {
    if (key.block >= first_block) RSD_RETURN_IF_ERROR(store_->DeleteBlock(key));
  }
  return absl::OkStatus();
}

absl::Status ColdTier::Export(const SessionId& session, BlockVisitor fn) {
  return store_->ForEachBlock(session, fn);
}

absl::StatusOr<bool> ColdTier::HoldsSession(const SessionId& session) {
  RSD_ASSIGN_OR_RETURN(std::vector<BlockKey> keys, store_->BlockKeys(session));
  return !keys.empty();
}

absl::StatusOr<size_t> ColdTier::SessionBytes(const SessionId& session) {
  RSD_ASSIGN_OR_RETURN(const int64_t bytes, store_->SessionBlockBytes(session));
  return static_cast<size_t>(bytes);
}

}  // namespace rsd
