// cuda-emu: the memory half of the runtime API: device and pinned host allocations, copies and
// memsets (see runtime.h for what is checked).
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/cuda/emu/device.h"
#include "kernels/cuda/emu/runtime.h"

namespace rsd::emu {

using internal::Allocation;
using internal::Device;
using internal::Fail;
using internal::kPage;
using internal::kPoisonMax;
using internal::kQuarantineMaps;
using internal::Op;
using internal::RoundUp;

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  if (bytes > d.limit - std::min(d.limit, d.stats.device_bytes)) {
    return Fail(cudaErrorMemoryAllocation);
  }
  Allocation al;
  al.bytes = bytes;
  al.data_len = RoundUp(bytes, kPage);
  void* m = mmap(nullptr, al.data_len + kPage, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return Fail(cudaErrorMemoryAllocation);
  al.map = static_cast<uint8_t*>(m);
  // The allocation ends where the guard page starts, so an overrun faults at once.
  al.user = al.map + al.data_len - RoundUp(bytes, 16);
  if (bytes <= kPoisonMax) std::memset(al.user, 0xFF, bytes);  // stale memory reads as NaN
  mprotect(al.map + al.data_len, kPage, PROT_NONE);
  if (d.protect && !d.window_open) mprotect(al.map, al.data_len, PROT_NONE);
  al.id = d.next_id++;
  d.live.emplace(reinterpret_cast<uintptr_t>(al.user), al);
  d.stats.device_bytes += bytes;
  d.stats.peak_device_bytes = std::max(d.stats.peak_device_bytes, d.stats.device_bytes);
  *ptr = al.user;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  auto it = d.live.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == d.live.end()) {
    std::fprintf(stderr, "cuda-emu: cudaFree(%p): not the start of a live device allocation%s\n",
                 ptr, d.Describe(reinterpret_cast<uintptr_t>(ptr)).c_str());
    return Fail(cudaErrorInvalidDevicePointer);
  }
  d.RunAll();  // as the real cudaFree, it waits for the device
  Allocation al = it->second;
  d.live.erase(it);
  d.stats.device_bytes -= al.bytes;
  madvise(al.map, al.data_len, MADV_DONTNEED);
  mprotect(al.map, al.data_len, PROT_NONE);
  d.freed.push_back(al);
  if (d.freed.size() > kQuarantineMaps) {
    munmap(d.freed.front().map, d.freed.front().data_len + kPage);
    d.freed.pop_front();
  }
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  void* p = std::aligned_alloc(kPage, RoundUp(bytes, kPage));
  if (p == nullptr) return Fail(cudaErrorMemoryAllocation);
  d.pinned.emplace(reinterpret_cast<uintptr_t>(p), bytes);
  d.stats.pinned_bytes += bytes;
  *ptr = p;
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  return cudaHostAlloc(ptr, bytes, cudaHostAllocDefault);
}

cudaError_t cudaFreeHost(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  auto it = d.pinned.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == d.pinned.end()) return Fail(cudaErrorInvalidValue);
  d.RunAll();
  d.stats.pinned_bytes -= it->second;
  d.pinned.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

namespace {

// Checks a copy's two sides against its kind; resolves cudaMemcpyDefault.
cudaError_t CheckCopy(Device& d, void* dst, const void* src, size_t n, cudaMemcpyKind* kind) {
  const bool dst_dev = d.FindLive(dst) != nullptr, src_dev = d.FindLive(src) != nullptr;
  if (*kind == cudaMemcpyDefault) {
    *kind = dst_dev ? (src_dev ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                    : (src_dev ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  }
  const bool want_dst_dev = *kind == cudaMemcpyHostToDevice || *kind == cudaMemcpyDeviceToDevice;
  const bool want_src_dev = *kind == cudaMemcpyDeviceToHost || *kind == cudaMemcpyDeviceToDevice;
  if (want_dst_dev != dst_dev || want_src_dev != src_dev) {
    std::fprintf(stderr, "cuda-emu: memcpy of kind %d from %p (%s) to %p (%s)\n", *kind, src,
                 src_dev ? "device" : "host", dst, dst_dev ? "device" : "host");
    return Fail(cudaErrorInvalidMemcpyDirection);
  }
  if ((dst_dev && d.FindRange(dst, n) == nullptr) || (src_dev && d.FindRange(src, n) == nullptr)) {
    std::fprintf(stderr, "cuda-emu: memcpy of %zu bytes runs past the end of an allocation\n", n);
    return Fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t CopyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind,
                      cudaStream_t stream, bool sync) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (n == 0) return cudaSuccess;
  if (!d.Valid(stream)) return Fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = CheckCopy(d, dst, src, n, &kind); e != cudaSuccess) return e;
  std::function<void()> run;
  auto count = [&d, n]() {
    d.stats.copies++;
    d.stats.bytes_copied += n;
  };
  if (kind == cudaMemcpyHostToDevice && !d.PinnedRange(src, n)) {
    // Pageable source: the runtime stages it before returning, so the caller may reuse it.
    auto staged = std::make_shared<std::vector<uint8_t>>(static_cast<const uint8_t*>(src),
                                                         static_cast<const uint8_t*>(src) + n);
    run = [dst, staged, n, count]() {
      std::memcpy(dst, staged->data(), n);
      count();
    };
  } else {
    run = [dst, src, n, count]() {
      std::memmove(dst, src, n);
      count();
    };
  }
  const bool pageable_dst = kind == cudaMemcpyDeviceToHost && !d.PinnedRange(dst, n);
  if (kind == cudaMemcpyDeviceToHost && !pageable_dst) {
    std::memset(dst, 0xFF, n);  // undefined until the copy has run
  }
  std::shared_ptr<Op> op = d.Enqueue(stream, "memcpy", std::move(run));
  // A synchronous copy, or one into pageable memory, returns only once it is done.
  if (sync || pageable_dst) d.RunUntil(op);
  return cudaSuccess;
}

}  // namespace

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  return CopyAsync(dst, src, n, kind, stream, false);
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  return CopyAsync(dst, src, n, kind, nullptr, true);
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t n, cudaStream_t stream) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (n == 0) return cudaSuccess;
  if (!d.Valid(stream)) return Fail(cudaErrorInvalidResourceHandle);
  if (d.FindRange(dst, n) == nullptr) return Fail(cudaErrorInvalidValue);
  d.Enqueue(stream, "memset", [dst, value, n]() { std::memset(dst, value, n); });
  return cudaSuccess;
}

cudaError_t cudaMemset(void* dst, int value, size_t n) {
  const cudaError_t e = cudaMemsetAsync(dst, value, n, nullptr);
  if (e != cudaSuccess) return e;
  return cudaStreamSynchronize(nullptr);
}

bool IsDevicePointer(const void* p) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  return d.FindLive(p) != nullptr;
}

bool IsPinnedPointer(const void* p) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  return d.PinnedRange(p, 1);
}

}  // namespace rsd::emu
