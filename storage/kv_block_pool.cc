#include "storage/kv_block_pool.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"

namespace rsd {

absl::StatusOr<std::unique_ptr<KvBlockPool>> KvBlockPool::Create(Backend* backend, int n_layers,
                                                                 int kv_dim, int block_tokens,
                                                                 size_t budget_bytes) {
  KvPoolView v;
  v.n_layers = n_layers;
  v.kv_dim = kv_dim;
  v.block_tokens = block_tokens;
  const size_t bb = v.block_bytes();
  if (bb == 0) return absl::InvalidArgumentError("K/V block of zero bytes");
  const size_t n = std::max<size_t>(1, budget_bytes / bb);
  if (n > (1u << 30)) return absl::InvalidArgumentError("K/V pool budget too large");
  v.n_blocks = static_cast<int32_t>(n);
  absl::StatusOr<DevicePtr<void>> base =
      backend->Alloc(n * bb, absl::StrCat("a K/V pool of ", n, " blocks"));
  if (!base.ok()) return base.status();
  v.base = DevicePtr<KvElement>(static_cast<KvElement*>(base->get()));
  std::unique_ptr<KvBlockPool> pool(new KvBlockPool(backend, v));
  pool->refs_.assign(n, 0);
  for (int32_t b = static_cast<int32_t>(n) - 1; b >= 0; --b) pool->free_.push_back(b);
  return pool;
}

KvBlockPool::~KvBlockPool() { backend_->Free(view_.base); }

absl::StatusOr<int32_t> KvBlockPool::Allocate() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(absl::StrCat("K/V pool full: all ", view_.n_blocks,
                                                     " blocks of ", block_bytes(),
                                                     " bytes are in use"));
  }
  int32_t b = free_.back();
  free_.pop_back();
  refs_[b] = 1;
  ++references_;
  return b;
}

void KvBlockPool::Retain(int32_t block) {
  RSD_CHECK(block >= 0 && block < view_.n_blocks && refs_[block] > 0);
  if (++refs_[block] == 2) ++shared_;
  ++references_;
}

bool KvBlockPool::Free(int32_t block) {
  RSD_CHECK(block >= 0 && block < view_.n_blocks && refs_[block] > 0);
  --references_;
  if (--refs_[block] == 1) --shared_;
  if (refs_[block] > 0) return false;
  free_.push_back(block);
  return true;
}

absl::Status KvBlockPool::Poison(int32_t block, uint8_t byte) {
  RSD_CHECK(block >= 0 && block < view_.n_blocks);
  return backend_->Fill(view_.K(block, 0), byte, block_bytes());
}

}  // namespace rsd
