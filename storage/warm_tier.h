// The warm tier: encoded checkpoint blocks (state_codec.h) in host memory under a byte budget,
// evicted least-recently-used first. On a GPU worker its memory is one pinned region (a HostArena
// over Backend::AllocHost memory) so blocks copy to and from the device directly; elsewhere, or
// when the region is too fragmented for a value, the heap. Offload hands back what it evicted for
// the next tier (TierChain); the tier never decodes anything itself. A value with the same bytes
// as one it holds (sessions sharing a prefix hold bit-identical checkpoints of it) shares that
// value's buffer: each distinct value is held once (issue #15).
#pragma once

#include <cstddef>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "storage/block_key.h"
#include "storage/host_memory.h"
#include "storage/state_tier.h"

namespace rsd {

// Thread-safe: every method takes one internal mutex for its duration (Export calls its visitor
// with it held: the visitor must not call back into the tier); none blocks on I/O. Values are
// copied in and out.
class WarmTier final : public StateTier {
 public:
  // What one entry counts against the budget: its value bytes plus the encoded key.
  static size_t Charge(size_t value_bytes) { return value_bytes + BlockKey::kEncodedSize; }

  // `memory` provides the value buffers (HeapAllocator() by default); it must outlive the tier.
  explicit WarmTier(size_t budget_bytes, HostAllocator* memory = nullptr);
  ~WarmTier() override;
  WarmTier(const WarmTier&) = delete;
  WarmTier& operator=(const WarmTier&) = delete;

  const char* name() const override { return "warm"; }
  // Stores `value` as the most recently used entry (sharing the buffer of an equal value held
  // under another key: found by its XXH3-128, compared byte for byte), then evicts
  // least-recently-used entries until bytes_used() <= budget(); returns them, oldest first. A value
  // whose Charge alone exceeds the budget is not stored: it comes back as the only entry (any older
  // value under `key` is gone).
  absl::StatusOr<std::vector<Entry>> Offload(const BlockKey& key, std::string value) override;
  // A copy, and marks the entry most recently used; NOT_FOUND if absent.
  absl::StatusOr<std::string> Onboard(const BlockKey& key) override;
  // `to` shares `from`'s buffer (its bytes are charged once, while any key holds them; each key
  // is charged its encoded size and has its own place in the LRU order).
  absl::StatusOr<std::vector<Entry>> Alias(const BlockKey& from, const BlockKey& to) override;
  absl::Status Evict(const BlockKey& key) override;
  absl::Status EvictSession(const SessionId& session, uint32_t first_block = 0) override;
  absl::Status Export(const SessionId& session, BlockVisitor fn) override;
  absl::StatusOr<bool> HoldsSession(const SessionId& session) override;
  size_t bytes_used() const override;
  absl::StatusOr<size_t> SessionBytes(const SessionId& session) override;

  // Removes and returns an entry (no LRU bookkeeping); nullopt if absent.
  std::optional<std::string> Take(const BlockKey& key);
  bool Contains(const BlockKey& key) const;
  // The keys of one session's entries in key order (layer, then block).
  std::vector<BlockKey> KeysOfSession(const SessionId& session) const;
  size_t budget() const { return budget_; }
  size_t size() const;  // entries
  // Bytes of values held in the HostAllocator given at construction (the rest is on the heap).
  size_t allocator_bytes() const;

 private:
  // A value's bytes, shared by the keys that alias it; freed with the last.
  struct Buffer {
    char* data = nullptr;
    size_t size = 0;
    bool from_heap = true;
    int keys = 0;
    std::string hash;  // of its bytes, as by_content_ knows it ("" : not indexed)
  };
  struct Slot {
    Buffer* buf = nullptr;
    std::list<BlockKey>::iterator lru;  // position in lru_
  };
  using Map = std::map<BlockKey, Slot>;

  static std::string Copy(const Slot& s) { return std::string(s.buf->data, s.buf->size); }
  void Release(Buffer* b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `key` as the most recently used entry on `buf` (one more key on it); what that evicts.
  std::vector<Entry> ShareLocked(const BlockKey& key, Buffer* buf)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts least-recently-used entries (never `keep`) until `incoming` more bytes fit.
  std::vector<Entry> MakeRoomLocked(size_t incoming, const BlockKey* keep)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseLocked(Map::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t budget_;
  HostAllocator* memory_;
  mutable absl::Mutex mu_;
  // Ordered so a session's entries are one range.
  Map entries_ ABSL_GUARDED_BY(mu_);
  std::list<BlockKey> lru_ ABSL_GUARDED_BY(mu_);  // front = most recently used
  absl::flat_hash_map<std::string, Buffer*> by_content_ ABSL_GUARDED_BY(mu_);
  size_t bytes_used_ ABSL_GUARDED_BY(mu_) = 0;
  size_t allocator_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace rsd
