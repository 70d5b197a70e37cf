#include "storage/warm_store.h"

#include <utility>

#include "storage/common/status.h"

namespace rsd {
namespace {

BlockKey FirstKeyOf(const SessionId& session) { return BlockKey{session, 0, 0}; }

}  // namespace

void WarmStore::EraseLocked(Map::iterator it) {
  bytes_used_ -= Charge(it->second.value.size());
  lru_.erase(it->second.lru);
  entries_.erase(it);
}

std::vector<WarmStore::Entry> WarmStore::Put(const BlockKey& key, std::string value) {
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
    evicted.push_back(Entry{victim->first, std::move(victim->second.value)});
    bytes_used_ -= Charge(evicted.back().value.size());
    lru_.erase(victim->second.lru);
    entries_.erase(victim);
  }
  lru_.push_front(key);
  entries_.emplace(key, Slot{std::move(value), lru_.begin()});
  bytes_used_ += charge;
  return evicted;
}

std::optional<std::string> WarmStore::Get(const BlockKey& key) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  return it->second.value;
}

std::optional<std::string> WarmStore::Take(const BlockKey& key) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  std::string value = std::move(it->second.value);
  bytes_used_ -= Charge(value.size());
  lru_.erase(it->second.lru);
  entries_.erase(it);
  return value;
}

bool WarmStore::Contains(const BlockKey& key) const {
  absl::MutexLock lock(&mu_);
  return entries_.count(key) > 0;
}

bool WarmStore::Erase(const BlockKey& key) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return false;
  EraseLocked(it);
  return true;
}

size_t WarmStore::EraseSession(const SessionId& session) {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  auto it = entries_.lower_bound(FirstKeyOf(session));
  while (it != entries_.end() && it->first.session == session) {
    auto next = std::next(it);
    EraseLocked(it);
    it = next;
    ++n;
  }
  return n;
}

std::vector<BlockKey> WarmStore::KeysOfSession(const SessionId& session) const {
  absl::MutexLock lock(&mu_);
  std::vector<BlockKey> keys;
  for (auto it = entries_.lower_bound(FirstKeyOf(session));
       it != entries_.end() && it->first.session == session; ++it) {
    keys.push_back(it->first);
  }
  return keys;
}

size_t WarmStore::SessionBytes(const SessionId& session) const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (auto it = entries_.lower_bound(FirstKeyOf(session));
       it != entries_.end() && it->first.session == session; ++it) {
    n += Charge(it->second.value.size());
  }
  return n;
}

size_t WarmStore::bytes_used() const {
  absl::MutexLock lock(&mu_);
  return bytes_used_;
}

size_t WarmStore::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

}  // namespace rsd
