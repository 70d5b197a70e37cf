#include "storage/warm_tier.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"

namespace rsd {
namespace {

BlockKey FirstKeyOf(const SessionId& session) { return BlockKey{session, 0, 0}; }

}  // namespace

WarmTier::WarmTier(size_t budget_bytes, HostAllocator* memory)
    : budget_(budget_bytes), memory_(memory != nullptr ? memory : &HeapAllocator()) {}

WarmTier::~WarmTier() {
  absl::MutexLock lock(&mu_);
  for (auto& [key, slot] : entries_) Release(slot);
}

void WarmTier::Release(Slot& s) {
  if (s.data == nullptr) return;
  if (s.from_heap) {
    HeapAllocator().Free(s.data);
  } else {
    memory_->Free(s.data);
  }
  s.data = nullptr;
}

void WarmTier::EraseLocked(Map::iterator it) {
  bytes_used_ -= Charge(it->second.size);
  if (!it->second.from_heap) allocator_bytes_ -= it->second.size;
  Release(it->second);
  lru_.erase(it->second.lru);
  entries_.erase(it);
}

absl::StatusOr<std::vector<StateTier::Entry>> WarmTier::Offload(const BlockKey& key,
                                                                std::string value) {
  std::vector<Entry> evicted;
  absl::MutexLock lock(&mu_);
  if (auto it = entries_.find(key); it != entries_.end()) EraseLocked(it);
  const size_t charge = Charge(value.size());
  if (charge > budget_) {
    evicted.push_back(Entry{key, std::move(value)});
    return evicted;
  }
  while (bytes_used_ + charge > budget_) {
    RSD_CHECK(!lru_.empty());
    auto victim = entries_.find(lru_.back());
    RSD_CHECK(victim != entries_.end());
    evicted.push_back(Entry{victim->first, Copy(victim->second)});
    EraseLocked(victim);
  }
  Slot slot;
  slot.size = value.size();
  slot.data = static_cast<char*>(memory_->Allocate(value.size()));
  slot.from_heap = slot.data == nullptr || memory_ == &HeapAllocator();
  if (slot.data == nullptr) slot.data = static_cast<char*>(HeapAllocator().Allocate(value.size()));
  if (slot.data == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "warm tier: no host memory for ", key.ToString(), " (", value.size(), " bytes)"));
  }
  std::memcpy(slot.data, value.data(), value.size());
  lru_.push_front(key);
  slot.lru = lru_.begin();
  if (!slot.from_heap) allocator_bytes_ += slot.size;
  entries_.emplace(key, slot);
  bytes_used_ += charge;
  return evicted;
}

absl::StatusOr<std::string> WarmTier::Onboard(const BlockKey& key) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("warm tier holds no ", key.ToString()));
  }
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  return Copy(it->second);
}

std::optional<std::string> WarmTier::Take(const BlockKey& key) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  std::string value = Copy(it->second);
  EraseLocked(it);
  return value;
}

bool WarmTier::Contains(const BlockKey& key) const {
  absl::MutexLock lock(&mu_);
  return entries_.count(key) > 0;
}

absl::Status WarmTier::Evict(const BlockKey& key) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it != entries_.end()) EraseLocked(it);
  return absl::OkStatus();
}

absl::Status WarmTier::EvictSession(const SessionId& session, uint32_t first_block) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.lower_bound(FirstKeyOf(session));
  while (it != entries_.end() && it->first.session == session) {
    auto next = std::next(it);
    if (it->first.block >= first_block) EraseLocked(it);
    it = next;
  }
  return absl::OkStatus();
}

absl::Status WarmTier::Export(const SessionId& session, BlockVisitor fn) {
  absl::MutexLock lock(&mu_);
  for (auto it = entries_.lower_bound(FirstKeyOf(session));
       it != entries_.end() && it->first.session == session; ++it) {
    RSD_RETURN_IF_ERROR(fn(it->first, std::string_view(it->second.data, it->second.size)));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> WarmTier::HoldsSession(const SessionId& session) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.lower_bound(FirstKeyOf(session));
  return it != entries_.end() && it->first.session == session;
}

std::vector<BlockKey> WarmTier::KeysOfSession(const SessionId& session) const {
  absl::MutexLock lock(&mu_);
  std::vector<BlockKey> keys;
  for (auto it = entries_.lower_bound(FirstKeyOf(session));
       it != entries_.end() && it->first.session == session; ++it) {
    keys.push_back(it->first);
  }
  return keys;
}

absl::StatusOr<size_t> WarmTier::SessionBytes(const SessionId& session) {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (auto it = entries_.lower_bound(FirstKeyOf(session));
       it != entries_.end() && it->first.session == session; ++it) {
    n += Charge(it->second.size);
  }
  return n;
}

size_t WarmTier::bytes_used() const {
  absl::MutexLock lock(&mu_);
  return bytes_used_;
}

size_t WarmTier::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

size_t WarmTier::allocator_bytes() const {
  absl::MutexLock lock(&mu_);
  return allocator_bytes_;
}

}  // namespace rsd
