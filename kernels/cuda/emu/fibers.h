// cuda-emu internals: GPU threads as fibers. A grid runs block by block on the host thread that
// waits for it; each GPU thread of a block is a fiber with its own small stack, and the block's
// scheduler (RunBlock in fibers.cc) switches to each ready thread in turn until all have exited,
// releasing barriers as they complete. Not part of the emulator's interface.
//
// Thread safety: a block runs on one host thread; t_block and t_thread are that thread's.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda/emu/device.h"
#include "kernels/cuda/emu/runtime.h"

namespace rsd::emu {

namespace detail {
// The last access of one shared-memory element, for the race check.
struct Access {
  int32_t tid = -1;  // -1: none; -2: several threads of one block epoch
  uint64_t block_gen = 0, warp_gen = 0;
};
struct Shadow {
  Access write, read;
};
struct SharedArrayState {
  const SharedSite* site = nullptr;
  uint8_t* data = nullptr;
  size_t elem = 0, count = 0;
  std::vector<Shadow> shadow;
};
}  // namespace detail

namespace internal {

struct FiberStack;

enum class ThreadState { kReady, kBlockBarrier, kWarpBarrier, kExited };

struct ThreadCtx {
  dim3 idx;
  int tid = 0, lane = 0, warp = 0;
  ThreadState state = ThreadState::kReady;
  // At a warp barrier: the mask, and for an exchange the value offered and the lane read.
  unsigned int wmask = 0;
  bool exchange = false;
  uint64_t offered = 0, result = 0;
  int src = -1;
  uint64_t warp_gen = 0;  // warp barriers this thread has passed
  void* sp = nullptr;     // the thread's saved stack pointer, while it is suspended
  const FiberStack* stack = nullptr;
};

// The block being run: its threads, its shared memory and the state of its shared arrays.
struct BlockRun {
  const char* kernel = "";
  dim3 bidx, bdim, gdim;
  std::vector<ThreadCtx> threads;
  uint64_t block_gen = 0;
  alignas(16) uint8_t shared[kMaxShared];
  size_t shared_used = 0;
  std::map<const detail::SharedSite*, std::unique_ptr<detail::SharedArrayState>> sites;
  const std::function<void()>* body = nullptr;
};

// The block this host thread is running and the GPU thread running on it; null outside a kernel.
extern constinit thread_local BlockRun* t_block;
extern constinit thread_local ThreadCtx* t_thread;

// " (kernel K, block (x,y,z), thread (x,y,z))" for the running thread, for messages; else "".
std::string WhereInKernel();

// The running GPU thread; dies if called outside a kernel.
inline ThreadCtx& Self() {
  if (t_thread == nullptr) Die("a device function was called outside a kernel");
  return *t_thread;
}

// Suspends the calling GPU thread until the block's scheduler resumes it.
void Yield();

// Runs every block of the grid to completion, one after another, on the calling host thread.
void RunGrid(const char* kernel, dim3 grid, dim3 block, const std::function<void()>& body);

}  // namespace internal
}  // namespace rsd::emu
