#include "storage/host_memory.h"

#include <cstdlib>
#include <iterator>

namespace rsd {
namespace {

constexpr size_t kGranule = 64;
size_t Granules(size_t n) { return (n + kGranule - 1) / kGranule * kGranule; }

class Heap final : public HostAllocator {
 public:
  void* Allocate(size_t bytes) override { return std::aligned_alloc(kGranule, Granules(bytes)); }
  void Free(void* p) override { std::free(p); }
  bool Owns(const void*) const override { return true; }
  const char* kind() const override { return "heap"; }
};

}  // namespace

HostAllocator& HeapAllocator() {
  static Heap* heap = new Heap();
  return *heap;
}

HostArena::HostArena(void* base, size_t bytes, const char* kind)
    : base_(static_cast<uint8_t*>(base)), bytes_(bytes / kGranule * kGranule), kind_(kind) {
  if (bytes_ > 0) free_[0] = bytes_;
}

void* HostArena::Allocate(size_t bytes) {
  const size_t n = Granules(bytes == 0 ? 1 : bytes);
  absl::MutexLock lock(&mu_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < n) continue;
    const size_t at = it->first, left = it->second - n;
    free_.erase(it);
    if (left > 0) free_[at + n] = left;
    used_[at] = n;
    return base_ + at;
  }
  return nullptr;
}

void HostArena::Free(void* p) {
  const size_t at = static_cast<size_t>(static_cast<uint8_t*>(p) - base_);
  absl::MutexLock lock(&mu_);
  auto u = used_.find(at);
  if (u == used_.end()) return;
  size_t start = at, size = u->second;
  used_.erase(u);
  auto next = free_.lower_bound(at);
  if (next != free_.end() && next->first == start + size) {  // merge with the free run after
    size += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {  // and with the one before
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      size += prev->second;
      free_.erase(prev);
    }
  }
  free_[start] = size;
}

bool HostArena::Owns(const void* p) const {
  const uint8_t* q = static_cast<const uint8_t*>(p);
  return q >= base_ && q < base_ + bytes_;
}

size_t HostArena::free_bytes() const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [at, size] : free_) n += size;
  return n;
}

}  // namespace rsd
