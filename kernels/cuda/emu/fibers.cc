// cuda-emu: GPU threads as fibers (see fibers.h), and the block scheduler that runs them and
// releases their barriers.
#include "kernels/cuda/emu/fibers.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define RSD_EMU_ASAN 1
#endif

// Switches stacks: saves the callee-saved registers on the current stack, stores the stack pointer
// in *save, loads `next` and restores what was saved there. (MXCSR and the x87 control word are
// callee-saved too, but nothing here changes them, so all threads share them.) x86-64 System V.
extern "C" void rsd_emu_switch(void** save, void* next);
extern "C" void rsd_emu_trampoline();
asm(R"(
  .text
  .p2align 4
  .globl rsd_emu_switch
  .type rsd_emu_switch, @function
rsd_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size rsd_emu_switch, .-rsd_emu_switch

  .p2align 4
  .globl rsd_emu_trampoline
  .type rsd_emu_trampoline, @function
rsd_emu_trampoline:
  movq %rbx, %rdi
  callq *%r12
  ud2
  .size rsd_emu_trampoline, .-rsd_emu_trampoline
)");

namespace rsd::emu::internal {

constinit thread_local BlockRun* t_block = nullptr;
constinit thread_local ThreadCtx* t_thread = nullptr;

struct FiberStack {
  void* map = nullptr;
  size_t size = 0;  // usable bytes above the guard page
  void* bottom() const { return static_cast<uint8_t*>(map) + kPage; }
  void* top() const { return static_cast<uint8_t*>(map) + kPage + size; }
};

namespace {

#if defined(RSD_EMU_ASAN)
constexpr size_t kStackBytes = 512 * 1024;
#else
constexpr size_t kStackBytes = 128 * 1024;
#endif

// Stacks for this host thread's fibers, reused from block to block (touched pages stay).
std::vector<FiberStack>& Stacks(size_t n) {
  thread_local std::vector<FiberStack> stacks;
  while (stacks.size() < n) {
    FiberStack s;
    s.size = kStackBytes;
    s.map = mmap(nullptr, kStackBytes + kPage, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s.map == MAP_FAILED) Die("cannot map a fiber stack");
    mprotect(s.map, kPage, PROT_NONE);  // overflow faults instead of corrupting a neighbour
    stacks.push_back(s);
  }
  return stacks;
}

// The scheduler's side of the switches: its saved stack pointer and (under ASan) its stack.
thread_local void* t_sched_sp = nullptr;
#if defined(RSD_EMU_ASAN)
thread_local const void* t_sched_bottom = nullptr;
thread_local size_t t_sched_size = 0;
#endif

}  // namespace

std::string WhereInKernel() {
  if (t_block == nullptr || t_thread == nullptr) return "";
  const BlockRun& b = *t_block;
  const dim3& t = t_thread->idx;
  return Format(" (kernel %s, block (%u,%u,%u), thread (%u,%u,%u))", b.kernel, b.bidx.x, b.bidx.y,
                b.bidx.z, t.x, t.y, t.z);
}

// Suspends the calling thread until the scheduler resumes it.
void Yield() {
  ThreadCtx* t = t_thread;
  BlockRun* b = t_block;
#if defined(RSD_EMU_ASAN)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, t_sched_bottom, t_sched_size);
#endif
  rsd_emu_switch(&t->sp, t_sched_sp);
#if defined(RSD_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, &t_sched_bottom, &t_sched_size);
#endif
  t_thread = t;
  t_block = b;
}

namespace {

// Where a thread starts: runs the kernel body, then leaves for good.
[[noreturn]] void ThreadMain(ThreadCtx* t) {
#if defined(RSD_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &t_sched_bottom, &t_sched_size);
#endif
  (*t_block->body)();
  t->state = ThreadState::kExited;
#if defined(RSD_EMU_ASAN)
  __sanitizer_start_switch_fiber(nullptr, t_sched_bottom, t_sched_size);
#endif
  void* unused = nullptr;
  rsd_emu_switch(&unused, t_sched_sp);
  __builtin_unreachable();
}

// A fresh thread's stack: what rsd_emu_switch pops (six callee-saved registers, then the return
// address) so that it "returns" into the trampoline, which calls ThreadMain(t).
void* PrepareStack(const FiberStack& st, ThreadCtx* t) {
#if defined(RSD_EMU_ASAN)
  // A finished thread leaves its frames' redzones poisoned: the stack is reused from scratch.
  __asan_unpoison_memory_region(st.bottom(), st.size);
#endif
  // Each thread's stack starts at a different offset within its page ("coloring"): the tops of
  // equally spaced stacks would otherwise all map to the same cache sets and evict each other
  // at every switch.
  auto* top = reinterpret_cast<uintptr_t*>(static_cast<uint8_t*>(st.top()) - (t->tid % 64) * 64);
  // Slots from sp upward: r15, r14, r13, r12, rbx, rbp, return address, then padding. After the
  // six pops and the ret, rsp = sp + 7 slots = top - 16 bytes, 16-byte aligned, as the ABI wants
  // at the trampoline's call.
  uintptr_t* sp = top - 9;
  sp[0] = 0;                                         // r15
  sp[1] = 0;                                         // r14
  sp[2] = 0;                                         // r13
  sp[3] = reinterpret_cast<uintptr_t>(&ThreadMain);  // r12: the function
  sp[4] = reinterpret_cast<uintptr_t>(t);            // rbx: its argument
  sp[5] = 0;                                         // rbp
  sp[6] = reinterpret_cast<uintptr_t>(&rsd_emu_trampoline);
  sp[7] = 0;
  sp[8] = 0;
  return sp;
}

// Releases the lanes waiting at a warp barrier whose masks are complete; false if none.
bool ReleaseWarps(BlockRun& b) {
  bool released = false;
  const int n = static_cast<int>(b.threads.size());
  for (int base = 0; base < n; base += 32) {
    for (int i = base; i < std::min(n, base + 32); ++i) {
      ThreadCtx& first = b.threads[i];
      if (first.state != ThreadState::kWarpBarrier) continue;
      const unsigned int mask = first.wmask;
      bool complete = true;
      for (int l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u)) continue;
        if (base + l >= n) {
          Die(
              Format("warp sync with mask 0x%08x names lane %d, which does not exist (the block "
                     "has %d threads) in kernel %s",
                     mask, l, n, b.kernel));
        }
        const ThreadCtx& o = b.threads[base + l];
        if (o.state == ThreadState::kExited) {
          Die(
              Format("warp sync with mask 0x%08x waits for lane %d of warp %d, which has exited, "
                     "in kernel %s",
                     mask, l, base / 32, b.kernel));
        }
        if (o.state != ThreadState::kWarpBarrier) {
          complete = false;
          continue;
        }
        if (o.wmask != mask || o.exchange != first.exchange) {
          Die(
              Format("lanes of warp %d meet at different warp operations (masks 0x%08x and "
                     "0x%08x) in kernel %s",
                     base / 32, mask, o.wmask, b.kernel));
        }
      }
      if (!complete) continue;
      for (int l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u)) continue;
        ThreadCtx& o = b.threads[base + l];
        if (o.exchange) {
          if (o.src < 0 || o.src >= 32 || !(mask >> o.src & 1u)) {
            Die(Format("a shuffle in kernel %s reads lane %d, which is not in its mask 0x%08x",
                       b.kernel, o.src, mask));
          }
          o.result = b.threads[base + o.src].offered;
        }
      }
      for (int l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u)) continue;
        ThreadCtx& o = b.threads[base + l];
        o.state = ThreadState::kReady;
        o.warp_gen++;
      }
      Device::Get().stats.barriers++;
      released = true;
    }
  }
  return released;
}

[[noreturn]] void Deadlock(const BlockRun& b) {
  std::string states;
  for (const ThreadCtx& t : b.threads) {
    const char* s = t.state == ThreadState::kBlockBarrier  ? "__syncthreads"
                    : t.state == ThreadState::kWarpBarrier ? "warp sync"
                    : t.state == ThreadState::kExited      ? "exited"
                                                           : "ready";
    states += Format(" %d:%s", t.tid, s);
    if (states.size() > 600) {
      states += " ...";
      break;
    }
  }
  Die(Format("kernel %s, block (%u,%u,%u): no thread can proceed (deadlock):%s", b.kernel, b.bidx.x,
             b.bidx.y, b.bidx.z, states.c_str()));
}

void RunBlock(BlockRun& b) {
  const int n = static_cast<int>(b.bdim.x * b.bdim.y * b.bdim.z);
  std::vector<FiberStack>& stacks = Stacks(static_cast<size_t>(n));
  b.threads.clear();
  b.threads.resize(static_cast<size_t>(n));
  std::memset(b.shared, 0xFF, sizeof(b.shared));
  for (int i = 0; i < n; ++i) {
    ThreadCtx& t = b.threads[i];
    t.tid = i;
    t.lane = i % 32;
    t.warp = i / 32;
    t.idx = dim3(i % b.bdim.x, (i / b.bdim.x) % b.bdim.y, i / (b.bdim.x * b.bdim.y));
    t.stack = &stacks[i];
    t.sp = PrepareStack(*t.stack, &t);
  }
  t_block = &b;
  for (int pass = 0;; ++pass) {
    for (int k = 0; k < n; ++k) {
      ThreadCtx& t = b.threads[(pass & 1) ? n - 1 - k : k];
      if (t.state != ThreadState::kReady) continue;
      t_thread = &t;
#if defined(RSD_EMU_ASAN)
      void* fake = nullptr;
      __sanitizer_start_switch_fiber(&fake, t.stack->bottom(), t.stack->size);
#endif
      rsd_emu_switch(&t_sched_sp, t.sp);
#if defined(RSD_EMU_ASAN)
      __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
      t_thread = nullptr;
      t_block = &b;
    }
    int exited = 0, at_block = 0;
    for (const ThreadCtx& t : b.threads) {
      exited += t.state == ThreadState::kExited;
      at_block += t.state == ThreadState::kBlockBarrier;
    }
    if (exited == n) break;
    bool released = ReleaseWarps(b);
    if (!released && at_block > 0 && at_block + exited == n) {
      if (exited > 0) {
        Die(
            Format("__syncthreads in kernel %s, block (%u,%u,%u) was reached by %d of %d "
                   "threads; %d had already exited (a barrier in divergent code)",
                   b.kernel, b.bidx.x, b.bidx.y, b.bidx.z, at_block, n, exited));
      }
      for (ThreadCtx& t : b.threads) t.state = ThreadState::kReady;
      b.block_gen++;
      Device::Get().stats.barriers++;
      released = true;
    }
    if (!released) Deadlock(b);
  }
  t_block = nullptr;
  b.sites.clear();
  b.shared_used = 0;
}

}  // namespace

void RunGrid(const char* kernel, dim3 grid, dim3 block, const std::function<void()>& body) {
  auto b = std::make_unique<BlockRun>();
  b->kernel = kernel;
  b->bdim = block;
  b->gdim = grid;
  b->body = &body;
  const int64_t total = static_cast<int64_t>(grid.x) * grid.y * grid.z;
  Stats& st = Device::Get().stats;
  st.launches++;
  // Blocks in reverse order: nothing may depend on blocks running in index order.
  for (int64_t lin = total - 1; lin >= 0; --lin) {
    b->bidx =
        dim3(static_cast<unsigned>(lin % grid.x), static_cast<unsigned>((lin / grid.x) % grid.y),
             static_cast<unsigned>(lin / (static_cast<int64_t>(grid.x) * grid.y)));
    RunBlock(*b);
    st.blocks++;
    st.threads += block.x * block.y * block.z;
  }
}

}  // namespace rsd::emu::internal
