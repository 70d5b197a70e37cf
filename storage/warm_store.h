// The warm tier: encoded checkpoint blocks (state_codec.h) in host memory, under a byte budget,
// evicted least-recently-used first. The store never decodes or demotes anything itself: Put hands
// back what it evicted and the caller moves that to the cold tier.
#pragma once

#include <cstddef>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "storage/block_key.h"
#include "storage/common/ids.h"

namespace rsd {

// Thread-safe: every method takes one internal mutex for its duration; none blocks on I/O. Values
// are copied in and out (the store owns its copies); a 100 KB value costs one memcpy.
class WarmStore {
 public:
  struct Entry {
    BlockKey key;
    std::string value;
  };

  // What one entry counts against the budget: its value bytes plus the encoded key.
  static size_t Charge(size_t value_bytes) { return value_bytes + BlockKey::kEncodedSize; }

  explicit WarmStore(size_t budget_bytes) : budget_(budget_bytes) {}
  WarmStore(const WarmStore&) = delete;
  WarmStore& operator=(const WarmStore&) = delete;

  // Inserts `value` under `key` (replacing an existing value, which is dropped, not returned) as
  // the most recently used entry, then evicts least-recently-used entries until bytes_used() <=
  // budget(). Returns the evicted entries, oldest first, for the caller to demote. A value whose
  // Charge alone exceeds the budget is not stored: it comes back as the only evicted entry (and
  // any older value under `key` is dropped), so the caller demotes it straight to cold.
  std::vector<Entry> Put(const BlockKey& key, std::string value);

  // A copy of the value, and marks it most recently used; nullopt if absent.
  std::optional<std::string> Get(const BlockKey& key);
  // Removes and returns the value (no copy); nullopt if absent. For onboarding a block back to
  // the hot tier when the warm copy is no longer wanted.
  std::optional<std::string> Take(const BlockKey& key);
  bool Contains(const BlockKey& key) const;

  // Removes one entry / every entry of a session. Return whether / how many were removed.
  bool Erase(const BlockKey& key);
  size_t EraseSession(const SessionId& session);
  // The keys of one session's entries in key order (layer, then block).
  std::vector<BlockKey> KeysOfSession(const SessionId& session) const;
  // The charged bytes of one session's entries (values plus keys), without copying them.
  size_t SessionBytes(const SessionId& session) const;

  size_t bytes_used() const;
  size_t budget() const { return budget_; }
  size_t size() const;  // entries

 private:
  struct Slot {
    std::string value;
    std::list<BlockKey>::iterator lru;  // position in lru_
  };
  using Map = std::map<BlockKey, Slot>;

  void EraseLocked(Map::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t budget_;
  mutable absl::Mutex mu_;
  // Ordered so a session's entries are one range (EraseSession, KeysOfSession).
  Map entries_ ABSL_GUARDED_BY(mu_);
  std::list<BlockKey> lru_ ABSL_GUARDED_BY(mu_);  // front = most recently used
  size_t bytes_used_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace rsd
