#include "storage/warm_tier.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/common/hash.h"
#include "storage/common/status.h"

namespace rsd {
namespace {

BlockKey FirstKeyOf(const SessionId& session) { return BlockKey{session, 0, 0}; }

}  // namespace

WarmTier::WarmTier(size_t budget_bytes, HostAllocator* memory)
    : budget_(budget_bytes), memory_(memory != nullptr ? memory : &HeapAllocator()) {}

WarmTier::~WarmTier() {
  absl::MutexLock lock(&mu_);
  for (auto& [key, slot] : entries_) {
    if (--slot.buf->keys == 0) Release(slot.buf);
  }
}

std::vector<StateTier::Entry> WarmTier::ShareLocked(const BlockKey& key, Buffer* buf) {
  ++buf->keys;  // before making room: the buffer stays while `key` holds it
  lru_.push_front(key);
  entries_.emplace(key, Slot{buf, lru_.begin()});
  bytes_used_ += BlockKey::kEncodedSize;
  return MakeRoomLocked(0, &key);
}

void WarmTier::Release(Buffer* b) {
  if (!b->hash.empty()) {
    auto it = by_content_.find(b->hash);
    if (it != by_content_.end() && it->second == b) by_content_.erase(it);
  }
  if (b->from_heap) {
    HeapAllocator().Free(b->data);
  } else {
    memory_->Free(b->data);
  }
  delete b;
}

void WarmTier::EraseLocked(Map::iterator it) {
  Buffer* b = it->second.buf;
  bytes_used_ -= BlockKey::kEncodedSize;
  if (--b->keys == 0) {
    bytes_used_ -= b->size;
    if (!b->from_heap) allocator_bytes_ -= b->size;
    Release(b);
  }
  lru_.erase(it->second.lru);
  entries_.erase(it);
}

std::vector<StateTier::Entry> WarmTier::MakeRoomLocked(size_t incoming, const BlockKey* keep) {
  std::vector<Entry> evicted;
  auto victim_of = [&]() -> std::list<BlockKey>::iterator {
    auto v = std::prev(lru_.end());
    if (keep != nullptr && *v == *keep && v != lru_.begin()) v = std::prev(v);
    return v;
  };
  while (bytes_used_ + incoming > budget_ && !lru_.empty()) {
    const auto v = victim_of();
    if (keep != nullptr && *v == *keep) break;  // only `keep` is left
    auto victim = entries_.find(*v);
    RSD_CHECK(victim != entries_.end());
    evicted.push_back(Entry{victim->first, Copy(victim->second)});
    EraseLocked(victim);
  }
  return evicted;
}

absl::StatusOr<std::vector<StateTier::Entry>> WarmTier::Offload(const BlockKey& key,
                                                                std::string value) {
  absl::MutexLock lock(&mu_);
  if (auto it = entries_.find(key); it != entries_.end()) EraseLocked(it);
  const size_t charge = Charge(value.size());
  if (charge > budget_) {
    std::vector<Entry> evicted;
    evicted.push_back(Entry{key, std::move(value)});
    return evicted;
  }
  Hasher hasher;
  hasher.Update(value);
  std::string hash = hasher.Digest();
  if (auto same = by_content_.find(hash);
      same != by_content_.end() && same->second->size == value.size() &&
      std::memcmp(same->second->data, value.data(), value.size()) == 0) {
    return ShareLocked(key, same->second);
  }
  std::vector<Entry> evicted = MakeRoomLocked(charge, nullptr);
  auto* buf = new Buffer;
  buf->size = value.size();
  buf->data = static_cast<char*>(memory_->Allocate(value.size()));
  buf->from_heap = buf->data == nullptr || memory_ == &HeapAllocator();
  if (buf->data == nullptr) buf->data = static_cast<char*>(HeapAllocator().Allocate(value.size()));
  if (buf->data == nullptr) {
    delete buf;
    return absl::ResourceExhaustedError(absl::StrCat(
        "warm tier: no host memory for ", key.ToString(), " (", value.size(), " bytes)"));
  }
  std::memcpy(buf->data, value.data(), value.size());
  buf->keys = 1;
  // Indexed unless another buffer holds the hash (a collision: that one stays the shared one).
  if (by_content_.emplace(hash, buf).second) buf->hash = std::move(hash);
  lru_.push_front(key);
  if (!buf->from_heap) allocator_bytes_ += buf->size;
  entries_.emplace(key, Slot{buf, lru_.begin()});
  bytes_used_ += charge;
  return evicted;
}

absl::StatusOr<std::vector<StateTier::Entry>> WarmTier::Alias(const BlockKey& from,
                                                              const BlockKey& to) {
  absl::MutexLock lock(&mu_);
  if (from == to) return std::vector<Entry>{};
  if (auto it = entries_.find(to); it != entries_.end()) EraseLocked(it);
  auto src = entries_.find(from);
  if (src == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("warm tier holds no ", from.ToString()));
  }
  return ShareLocked(to, src->second.buf);
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
    RSD_RETURN_IF_ERROR(
        fn(it->first, std::string_view(it->second.buf->data, it->second.buf->size)));
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
    n += Charge(it->second.buf->size);
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
