// cuda-emu: what kernel code calls (runtime.h's detail namespace): thread and block indices,
// barriers and shuffles, checked shared memory, and the launch that queues a grid.
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "kernels/cuda/emu/device.h"
#include "kernels/cuda/emu/fibers.h"
#include "kernels/cuda/emu/runtime.h"

namespace rsd::emu {

using internal::BlockRun;
using internal::Device;
using internal::Die;
using internal::Fail;
using internal::Format;
using internal::kMaxShared;
using internal::kMaxThreads;
using internal::RoundUp;
using internal::RunGrid;
using internal::Self;
using internal::t_block;
using internal::ThreadCtx;
using internal::ThreadState;
using internal::WhereInKernel;
using internal::Yield;

namespace {

// Whether an earlier access `a` is ordered before thread t's (same thread, a block barrier since,
// or a warp barrier since within t's warp): if not, the two race.
bool Ordered(const detail::Access& a, const ThreadCtx& t, uint64_t block_gen) {
  if (a.tid == -1 || a.tid == t.tid) return true;
  if (a.block_gen < block_gen) return true;
  return a.tid >= 0 && a.tid / 32 == t.warp && a.warp_gen < t.warp_gen;
}

}  // namespace

namespace detail {

const dim3& ThreadIdx() { return Self().idx; }
const dim3& BlockIdx() {
  Self();
  return t_block->bidx;
}
const dim3& BlockDim() {
  Self();
  return t_block->bdim;
}
const dim3& GridDim() {
  Self();
  return t_block->gdim;
}
int LaneId() { return Self().lane; }

void SyncThreads() {
  ThreadCtx& t = Self();
  t.state = ThreadState::kBlockBarrier;
  Yield();
}

static void WarpWait(unsigned int mask, bool exchange, uint64_t value, int src) {
  ThreadCtx& t = Self();
  if (!(mask >> t.lane & 1u)) {
    KernelFail(
        Format("a warp operation with mask 0x%08x was called by lane %d, which is not in "
               "the mask",
               mask, t.lane));
  }
  t.state = ThreadState::kWarpBarrier;
  t.wmask = mask;
  t.exchange = exchange;
  t.offered = value;
  t.src = src;
  Yield();
}

void SyncWarp(unsigned int mask) { WarpWait(mask, false, 0, -1); }

uint64_t WarpExchange(unsigned int mask, uint64_t value, int src_lane) {
  WarpWait(mask, true, value, src_lane & 31);
  return Self().result;
}

void KernelFail(const std::string& message) { Die(message + WhereInKernel()); }

SharedArrayState* SharedArrayFor(const SharedSite* site, size_t elem_bytes, size_t count) {
  Self();
  BlockRun& b = *t_block;
  auto it = b.sites.find(site);
  if (it != b.sites.end()) return it->second.get();
  const size_t off = RoundUp(b.shared_used, 16);
  const size_t bytes = elem_bytes * count;
  if (off + bytes > kMaxShared) {
    KernelFail(
        Format("shared array %s (%s:%d) of %zu bytes takes the block's shared memory to "
               "%zu bytes, over the %zu a block may use",
               site->name, site->file, site->line, bytes, off + bytes, kMaxShared));
  }
  auto a = std::make_unique<SharedArrayState>();
  a->site = site;
  a->data = b.shared + off;
  a->elem = elem_bytes;
  a->count = count;
  a->shadow.resize(count);
  b.shared_used = off + bytes;
  SharedArrayState* p = a.get();
  b.sites.emplace(site, std::move(a));
  return p;
}

void* SharedData(SharedArrayState* a) { return a->data; }

static void CheckIndex(const SharedArrayState* a, size_t i) {
  if (i >= a->count) {
    KernelFail(Format("index %zu is outside shared array %s[%zu] (%s:%d)", i, a->site->name,
                      a->count, a->site->file, a->site->line));
  }
}

void SharedRead(SharedArrayState* a, size_t i) {
  CheckIndex(a, i);
  ThreadCtx& t = Self();
  const uint64_t gen = t_block->block_gen;
  Shadow& s = a->shadow[i];
  if (s.write.tid == -1) {
    KernelFail(Format("thread %d reads %s[%zu] (%s:%d), which no thread of the block has written",
                      t.tid, a->site->name, i, a->site->file, a->site->line));
  }
  if (!Ordered(s.write, t, gen)) {
    KernelFail(
        Format("data race on shared %s[%zu] (%s:%d): thread %d reads what thread %d wrote "
               "with no barrier between",
               a->site->name, i, a->site->file, a->site->line, t.tid, s.write.tid));
  }
  if (s.read.tid == -1 || s.read.tid == t.tid || Ordered(s.read, t, gen)) {
    s.read = Access{t.tid, gen, t.warp_gen};
  } else {
    s.read.tid = -2;  // several readers since the last barrier
    s.read.block_gen = gen;
  }
}

void SharedWrite(SharedArrayState* a, size_t i) {
  CheckIndex(a, i);
  ThreadCtx& t = Self();
  const uint64_t gen = t_block->block_gen;
  Shadow& s = a->shadow[i];
  if (!Ordered(s.write, t, gen)) {
    KernelFail(
        Format("data race on shared %s[%zu] (%s:%d): threads %d and %d write it with no "
               "barrier between",
               a->site->name, i, a->site->file, a->site->line, s.write.tid, t.tid));
  }
  if (!Ordered(s.read, t, gen)) {
    KernelFail(
        Format("data race on shared %s[%zu] (%s:%d): thread %d overwrites what %s read "
               "with no barrier between",
               a->site->name, i, a->site->file, a->site->line, t.tid,
               s.read.tid == -2 ? "other threads" : Format("thread %d", s.read.tid).c_str()));
  }
  s.write = Access{t.tid, gen, t.warp_gen};
}

void CheckKernelPointer(const char* kernel, int index, const void* p) {
  if (p == nullptr) return;
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (d.FindLive(p) != nullptr) return;
  const std::string what = d.Describe(reinterpret_cast<uintptr_t>(p));
  Die(Format("kernel %s: argument %d (%p) is not device memory%s%s", kernel, index, p,
             what.empty() ? " (a host pointer?)" : ": ", what.c_str()));
}

void EnqueueLaunch(const char* kernel, dim3 grid, dim3 block, size_t shared_bytes,
                   cudaStream_t stream, std::function<void()> body) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads || block.z > 64 || grid.x == 0 || grid.y == 0 ||
      grid.z == 0 || grid.x > 0x7FFFFFFFu || grid.y > 65535 || grid.z > 65535) {
    std::fprintf(stderr, "cuda-emu: kernel %s launched with grid (%u,%u,%u), block (%u,%u,%u)\n",
                 kernel, grid.x, grid.y, grid.z, block.x, block.y, block.z);
    Fail(cudaErrorInvalidConfiguration);
    return;
  }
  if (shared_bytes != 0) {
    // Dynamic shared memory is not used by our kernels; RSD_SHARED arrays are static.
    std::fprintf(stderr, "cuda-emu: kernel %s asks for %zu bytes of dynamic shared memory\n",
                 kernel, shared_bytes);
    Fail(cudaErrorInvalidValue);
    return;
  }
  if (!d.Valid(stream)) {
    Fail(cudaErrorInvalidResourceHandle);
    return;
  }
  d.Enqueue(stream, kernel, [kernel, grid, block, body = std::move(body)]() {
    RunGrid(kernel, grid, block, body);
  });
}

}  // namespace detail
}  // namespace rsd::emu
