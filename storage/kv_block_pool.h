// The hot tier: a fixed pool of K/V blocks in backend memory, carved from one allocation sized by a
// byte budget. Sequences reach blocks through block tables of block ids. A block is reference
// counted: sequences whose histories share a prefix of whole chunks point at the same blocks (a
// chunk's K/V is a function of the tokens through it), read-only while shared. Not thread-safe:
// owned by the engine's compute thread.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace rsd {

class KvBlockPool {
 public:
  // Allocates floor(budget_bytes / block_bytes) blocks (at least one). RESOURCE_EXHAUSTED if the
  // backend cannot provide them; INVALID_ARGUMENT for a zero-sized layout.
  static absl::StatusOr<std::unique_ptr<KvBlockPool>> Create(Backend* backend, int n_layers,
                                                             int kv_dim, int block_tokens,
                                                             size_t budget_bytes);
  ~KvBlockPool();
  KvBlockPool(const KvBlockPool&) = delete;
  KvBlockPool& operator=(const KvBlockPool&) = delete;

  // A free block id with one reference, or RESOURCE_EXHAUSTED naming the pool's size.
  absl::StatusOr<int32_t> Allocate();
  // One more reference to a block in use (another sequence shares it).
  void Retain(int32_t block);
  // Drops one reference; the block is free when none is left (returns whether it was freed).
  bool Free(int32_t block);
  int32_t refs(int32_t block) const { return refs_.at(static_cast<size_t>(block)); }

  const KvPoolView& view() const { return view_; }
  size_t block_bytes() const { return view_.block_bytes(); }
  int32_t capacity() const { return view_.n_blocks; }
  int32_t used() const { return view_.n_blocks - static_cast<int32_t>(free_.size()); }
  size_t bytes_used() const { return static_cast<size_t>(used()) * block_bytes(); }
  // Blocks referenced by more than one sequence, and the blocks sharing saves (references beyond
  // the first of every block: what the pool would hold more without sharing).
  int32_t shared() const { return shared_; }
  int64_t saved() const { return references_ - used(); }
  // Overwrites one block with `byte` (tests poison blocks before a rebuild).
  absl::Status Poison(int32_t block, uint8_t byte);

 private:
  KvBlockPool(Backend* backend, KvPoolView view) : backend_(backend), view_(view) {}
  Backend* backend_;
  KvPoolView view_;
  std::vector<int32_t> free_;  // LIFO stack of free ids
  std::vector<int32_t> refs_;  // per block; 0: free
  int32_t shared_ = 0;         // blocks with refs > 1
  int64_t references_ = 0;     // sum of refs
};

}  // namespace rsd
