#include "storage/tier_chain.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"

namespace rsd {

void TierChain::Add(std::unique_ptr<StateTier> tier) { tiers_.push_back(std::move(tier)); }

absl::Status TierChain::OffloadFrom(size_t level, std::vector<StateTier::Entry> entries) {
  for (size_t l = level; l < tiers_.size() && !entries.empty(); ++l) {
    RSD_ASSIGN_OR_RETURN(entries, tiers_[l]->Import(std::move(entries)));
  }
  return absl::OkStatus();  // what the bottom tier pushed out is dropped
}

absl::Status TierChain::Offload(const BlockKey& key, std::string value) {
  std::vector<StateTier::Entry> one;
  one.push_back(StateTier::Entry{key, std::move(value)});
  return OffloadFrom(0, std::move(one));
}

absl::StatusOr<std::string> TierChain::Onboard(const BlockKey& key, const char** from) {
  for (const auto& t : tiers_) {
    absl::StatusOr<std::string> v = t->Onboard(key);
    if (v.status().code() == absl::StatusCode::kNotFound) continue;
    if (v.ok() && from != nullptr) *from = t->name();
    return v;
  }
  return absl::NotFoundError(absl::StrCat("no tier holds ", key.ToString()));
}

absl::StatusOr<size_t> TierChain::Alias(const BlockKey& from, const BlockKey& to) {
  // In the tier that holds `from`, where it can share the value; else a copy into the top tier.
  for (size_t i = 0; i < tiers_.size(); ++i) {
    absl::StatusOr<std::vector<StateTier::Entry>> pushed = tiers_[i]->Alias(from, to);
    if (pushed.ok()) {
      RSD_RETURN_IF_ERROR(OffloadFrom(i + 1, *std::move(pushed)));
      return size_t{0};
    }
    const absl::StatusCode code = pushed.status().code();
    if (code != absl::StatusCode::kNotFound && code != absl::StatusCode::kUnimplemented) {
      return pushed.status();
    }
  }
  RSD_ASSIGN_OR_RETURN(std::string value, Onboard(from));
  const size_t bytes = value.size();
  RSD_RETURN_IF_ERROR(Offload(to, std::move(value)));
  return bytes;
}

absl::Status TierChain::Evict(const BlockKey& key) {
  for (const auto& t : tiers_) RSD_RETURN_IF_ERROR(t->Evict(key));
  return absl::OkStatus();
}

absl::Status TierChain::EvictSession(const SessionId& session, uint32_t first_block) {
  for (const auto& t : tiers_) RSD_RETURN_IF_ERROR(t->EvictSession(session, first_block));
  return absl::OkStatus();
}

absl::Status TierChain::Demote(const SessionId& session, size_t level) {
  if (level + 1 >= tiers_.size()) return absl::OkStatus();
  std::vector<StateTier::Entry> entries;
  RSD_RETURN_IF_ERROR(tiers_[level]->Export(session, [&](const BlockKey& k, std::string_view v) {
    entries.push_back(StateTier::Entry{k, std::string(v)});
    return absl::OkStatus();
  }));
  std::vector<BlockKey> keys;
  for (const StateTier::Entry& e : entries) keys.push_back(e.key);
  RSD_RETURN_IF_ERROR(OffloadFrom(level + 1, std::move(entries)));
  for (const BlockKey& k : keys) RSD_RETURN_IF_ERROR(tiers_[level]->Evict(k));
  return absl::OkStatus();
}

absl::Status TierChain::Export(const SessionId& session, BlockVisitor fn) {
  std::map<BlockKey, std::string> blocks;
  for (const auto& t : tiers_) {
    RSD_RETURN_IF_ERROR(t->Export(session, [&](const BlockKey& k, std::string_view v) {
      blocks.emplace(k, std::string(v));  // an upper tier's copy stays
      return absl::OkStatus();
    }));
  }
  for (const auto& [k, v] : blocks) RSD_RETURN_IF_ERROR(fn(k, v));
  return absl::OkStatus();
}

absl::Status TierChain::Import(std::vector<StateTier::Entry> entries) {
  return OffloadFrom(0, std::move(entries));
}

absl::StatusOr<const char*> TierChain::DeepestHolding(const SessionId& session) const {
  for (size_t l = tiers_.size(); l-- > 0;) {
    RSD_ASSIGN_OR_RETURN(bool holds, tiers_[l]->HoldsSession(session));
    if (holds) return tiers_[l]->name();
  }
  return static_cast<const char*>(nullptr);
}

absl::StatusOr<size_t> TierChain::SessionBytes(const SessionId& session, size_t level) const {
  if (level >= tiers_.size()) return size_t{0};
  return tiers_[level]->SessionBytes(session);
}

}  // namespace rsd
