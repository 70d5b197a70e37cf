// Where the warm tier keeps its bytes: ordinary heap memory, or one region that a device copies
// from directly (pinned host memory from Backend::AllocHost on a GPU worker), which the tier carves
// up with a HostArena. storage/ knows no CUDA: the region is handed in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace rsd {

class HostAllocator {
 public:
  virtual ~HostAllocator() = default;
  // nullptr when it has no room; the caller falls back to the heap.
  virtual void* Allocate(size_t bytes) = 0;
  virtual void Free(void* p) = 0;
  // Whether `p` came from this allocator.
  virtual bool Owns(const void* p) const = 0;
  virtual const char* kind() const = 0;  // "heap", "pinned", ...
};

// The heap (malloc), 64-byte aligned. Thread-safe. A process-wide instance.
HostAllocator& HeapAllocator();

// First fit over one region with coalescing of freed neighbours; 64-byte granules. Does not own
// the region. Thread-safe.
class HostArena final : public HostAllocator {
 public:
  HostArena(void* base, size_t bytes, const char* kind);
  void* Allocate(size_t bytes) override;
  void Free(void* p) override;
  bool Owns(const void* p) const override;
  const char* kind() const override { return kind_; }
  size_t capacity() const { return bytes_; }
  size_t free_bytes() const;

 private:
  uint8_t* base_;
  size_t bytes_;
  const char* kind_;
  mutable absl::Mutex mu_;
  std::map<size_t, size_t> free_ ABSL_GUARDED_BY(mu_);  // offset -> size, non-adjacent
  std::map<size_t, size_t> used_ ABSL_GUARDED_BY(mu_);  // offset -> size
};

}  // namespace rsd
