// cuda-emu internals: the emulated device's memory and its per-stream work queues (the state behind
// the runtime API in runtime.cc and memory.cc). Not part of the emulator's interface: only the
// emulator's own files include this.
//
// Thread safety: Device's members are guarded by Device::mu; every runtime API call holds it for
// its whole duration, including while queued work (kernels) runs.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "kernels/cuda/emu/runtime.h"

namespace rsd::emu {

namespace internal {
struct Op;
}  // namespace internal

struct Stream {
  unsigned int flags = cudaStreamDefault;
  std::shared_ptr<internal::Op> last;
};

struct Event {
  unsigned int flags = cudaEventDefault;
  std::shared_ptr<internal::Op> op;
  int queries = 0;
};

namespace internal {

inline constexpr size_t kPage = 4096;
inline constexpr size_t kMaxShared = 48 * 1024;
inline constexpr int kMaxThreads = 1024;
inline constexpr size_t kDefaultMemory = size_t{16} << 30;
inline constexpr size_t kQuarantineMaps = 4096;  // freed mappings kept unmapped-but-reserved
inline constexpr size_t kPoisonMax = size_t{1} << 30;
inline constexpr uint64_t kMaxPending = 200000;

inline double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline size_t RoundUp(size_t n, size_t a) { return (n + a - 1) / a * a; }

// Prints "cuda-emu: <message>" and aborts: how a broken kernel or host access is reported.
[[noreturn]] void Die(const std::string& message);
// printf into a string (at most 1023 characters).
std::string Format(const char* fmt, ...);

// Records `e` as the calling thread's last error (cudaGetLastError) and returns it.
cudaError_t Fail(cudaError_t e);

struct Allocation {
  uint8_t* user = nullptr;  // what cudaMalloc returned
  size_t bytes = 0;
  uint8_t* map = nullptr;  // the mapping: data pages, then one guard page
  size_t data_len = 0;
  uint64_t id = 0;
};

// One piece of queued work (a kernel, a copy, an event marker) and what must run before it.
struct Op {
  std::string what;
  std::function<void()> run;
  std::vector<std::shared_ptr<Op>> deps;
  bool done = false;
  double done_time = 0;
};

class Device {
 public:
  // The one emulated device; created on first use (reading RSD_CUDA_EMU_MEMORY and
  // RSD_CUDA_EMU_PROTECT, installing the fault handler) and never destroyed.
  static Device& Get() {
    static Device* d = new Device();  // never destroyed: kernels may run at exit
    return *d;
  }

  std::mutex mu;
  size_t limit = kDefaultMemory;
  bool protect = true;
  Stats stats;
  std::map<uintptr_t, Allocation> live;  // by user pointer
  std::deque<Allocation> freed;          // quarantined mappings, oldest first
  std::map<uintptr_t, size_t> pinned;    // pinned host allocations: start -> bytes
  std::set<Stream*> streams;
  std::set<Event*> events;
  Stream legacy;  // stream 0
  uint64_t next_id = 1;
  uint64_t pending = 0;
  bool window_open = false;

  // The live allocation that holds p (or ends at p), or null.
  const Allocation* FindLive(const void* p) const;
  // The live allocation that holds all of [p, p + n), or null.
  const Allocation* FindRange(const void* p, size_t n) const;
  // Whether [p, p + n) lies in one pinned host allocation.
  bool PinnedRange(const void* p, size_t n) const;
  // Describes what address `a` is, for a fault message; empty if not emulator memory.
  std::string Describe(uintptr_t a) const;

  // Device memory is readable and writable only while queued work runs ("the window").
  void SetProtection(int prot);
  void OpenWindow();
  void CloseWindow();

  // Runs `target` and everything it depends on (nothing else), in dependency order.
  void RunUntil(const std::shared_ptr<Op>& target);
  void RunAll();

  Stream* Resolve(cudaStream_t s) { return s == nullptr ? &legacy : s; }
  bool Valid(cudaStream_t s) const { return s == nullptr || streams.count(s) > 0; }

  // Queues `run` on stream `s` after everything it must follow.
  std::shared_ptr<Op> Enqueue(cudaStream_t s, std::string what, std::function<void()> run);

 private:
  Device();
  static void InstallFaultHandler();
};

}  // namespace internal
}  // namespace rsd::emu
