// A tier of session state below the hot pool (DESIGN.md section 4): encoded checkpoint blocks
// (state_codec.h) keyed by BlockKey. Every tier speaks the same verbs:
//   Offload   keep a value (replacing); what the tier pushes out to make room comes back, oldest
//             first, for the next tier down (TierChain)
//   Onboard   a copy of a value
//   Evict     drop a block, or a session's blocks from one block index on
//   Export    every block of a session, in key order
//   Import    a session's blocks from elsewhere (another worker), as a batch of Offloads
// Implementations: WarmTier (host or pinned memory, LRU, a byte budget), ColdTier (RocksDB),
// MemoryTier (unbounded, tests), testing/FaultyTier (injects failures). Thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "storage/block_key.h"

namespace rsd {

// Called with each block of an Export; `value` is valid during the call only. A non-OK status
// stops the export and is returned.
using BlockVisitor = absl::FunctionRef<absl::Status(const BlockKey& key, std::string_view value)>;

class StateTier {
 public:
  struct Entry {
    BlockKey key;
    std::string value;
  };

  virtual ~StateTier() = default;
  // "warm", "cold", ... (what a restore reports it came from).
  virtual const char* name() const = 0;

  // Keeps `value` under `key`. Returns the entries pushed out to make room, oldest first; a value
  // the tier can never hold comes back itself (and any older value under `key` is gone).
  virtual absl::StatusOr<std::vector<Entry>> Offload(const BlockKey& key, std::string value) = 0;
  // NOT_FOUND naming the key if absent; DATA_LOSS / INTERNAL if it cannot be read.
  virtual absl::StatusOr<std::string> Onboard(const BlockKey& key) = 0;
  // Keeps `from`'s value also under `to` without copying it where the tier can share bytes
  // (charged once); returns what was pushed out as Offload does. NOT_FOUND if `from` is absent;
  // UNIMPLEMENTED where the tier cannot share (the caller copies).
  virtual absl::StatusOr<std::vector<Entry>> Alias(const BlockKey& from, const BlockKey& to) {
    return absl::UnimplementedError(absl::StrCat(name(), " tier shares no values"));
  }
  // Absent keys are OK.
  virtual absl::Status Evict(const BlockKey& key) = 0;
  // Drops the session's blocks with block index >= first_block, every layer.
  virtual absl::Status EvictSession(const SessionId& session, uint32_t first_block = 0) = 0;
  virtual absl::Status Export(const SessionId& session, BlockVisitor fn) = 0;
  // Whether any block of the session is here (cheap: no value is read where avoidable).
  virtual absl::StatusOr<bool> HoldsSession(const SessionId& session) = 0;
  // Offloads each entry; returns what was pushed out, oldest first.
  absl::StatusOr<std::vector<Entry>> Import(std::vector<Entry> entries) {
    std::vector<Entry> out;
    for (Entry& e : entries) {
      absl::StatusOr<std::vector<Entry>> pushed = Offload(e.key, std::move(e.value));
      if (!pushed.ok()) return pushed.status();
      for (Entry& p : *pushed) out.push_back(std::move(p));
    }
    return out;
  }

  // Bytes held (values and keys), in total and for one session.
  virtual size_t bytes_used() const = 0;
  virtual absl::StatusOr<size_t> SessionBytes(const SessionId& session) = 0;
};

}  // namespace rsd
