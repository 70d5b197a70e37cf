// cuda-emu: the emulated device (see runtime.h for what it checks and why).
#include "kernels/cuda/emu/runtime.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

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

namespace rsd::emu {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kMaxShared = 48 * 1024;
constexpr int kMaxThreads = 1024;
constexpr size_t kDefaultMemory = size_t{16} << 30;
constexpr size_t kQuarantineMaps = 4096;  // freed mappings kept unmapped-but-reserved
constexpr size_t kPoisonMax = size_t{1} << 30;
constexpr uint64_t kMaxPending = 200000;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

size_t RoundUp(size_t n, size_t a) { return (n + a - 1) / a * a; }

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "cuda-emu: %s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

std::string Format(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Memory

struct Allocation {
  uint8_t* user = nullptr;  // what cudaMalloc returned
  size_t bytes = 0;
  uint8_t* map = nullptr;  // the mapping: data pages, then one guard page
  size_t data_len = 0;
  uint64_t id = 0;
};

struct Op {
  std::string what;
  std::function<void()> run;
  std::vector<std::shared_ptr<Op>> deps;
  bool done = false;
  double done_time = 0;
};

}  // namespace

struct Stream {
  unsigned int flags = cudaStreamDefault;
  std::shared_ptr<Op> last;
};

struct Event {
  unsigned int flags = cudaEventDefault;
  std::shared_ptr<Op> op;
  int queries = 0;
};

namespace {

class Device {
 public:
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

  const Allocation* FindLive(const void* p) const {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = live.upper_bound(a);
    if (it == live.begin()) return nullptr;
    --it;
    const Allocation& al = it->second;
    return a <= reinterpret_cast<uintptr_t>(al.user) + al.bytes ? &al : nullptr;
  }
  // The live allocation that holds all of [p, p + n), or null.
  const Allocation* FindRange(const void* p, size_t n) const {
    const Allocation* al = FindLive(p);
    if (al == nullptr) return nullptr;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p), u = reinterpret_cast<uintptr_t>(al->user);
    return a + n <= u + al->bytes ? al : nullptr;
  }
  bool PinnedRange(const void* p, size_t n) const {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = pinned.upper_bound(a);
    if (it == pinned.begin()) return false;
    --it;
    return a + n <= it->first + it->second;
  }
  // Describes what address `a` is, for a fault message; empty if not emulator memory.
  std::string Describe(uintptr_t a) const {
    for (const auto& [u, al] : live) {
      const uintptr_t m = reinterpret_cast<uintptr_t>(al.map);
      if (a < m || a >= m + al.data_len + kPage) continue;
      if (a >= u && a < u + al.bytes) {
        return Format("%zu bytes into device allocation #%llu of %zu bytes", a - u,
                      static_cast<unsigned long long>(al.id), al.bytes);
      }
      if (a >= u + al.bytes) {
        return Format("%zu bytes past the end of device allocation #%llu of %zu bytes",
                      a - (u + al.bytes), static_cast<unsigned long long>(al.id), al.bytes);
      }
      return Format("before the start of device allocation #%llu",
                    static_cast<unsigned long long>(al.id));
    }
    for (const Allocation& al : freed) {
      const uintptr_t m = reinterpret_cast<uintptr_t>(al.map);
      if (a >= m && a < m + al.data_len + kPage) {
        return Format("inside freed device allocation #%llu of %zu bytes (use after free)",
                      static_cast<unsigned long long>(al.id), al.bytes);
      }
    }
    return "";
  }

  void SetProtection(int prot) {
    if (!protect) return;
    for (auto& [u, al] : live) {
      if (mprotect(al.map, al.data_len, prot) != 0) Die("mprotect failed");
    }
  }
  void OpenWindow() {
    if (window_open) return;
    SetProtection(PROT_READ | PROT_WRITE);
    window_open = true;
  }
  void CloseWindow() {
    if (!window_open) return;
    SetProtection(PROT_NONE);
    window_open = false;
  }

  // Runs `target` and everything it depends on (nothing else), in dependency order.
  void RunUntil(const std::shared_ptr<Op>& target) {
    if (!target || target->done) return;
    stats.flushes++;
    OpenWindow();
    std::vector<std::pair<Op*, size_t>> stack;
    stack.emplace_back(target.get(), 0);
    while (!stack.empty()) {
      Op* op = stack.back().first;
      size_t& i = stack.back().second;
      if (op->done) {
        stack.pop_back();
        continue;
      }
      if (i < op->deps.size()) {
        Op* d = op->deps[i++].get();
        if (!d->done) stack.emplace_back(d, 0);
        continue;
      }
      if (op->run) op->run();
      op->run = nullptr;
      op->deps.clear();
      op->done = true;
      op->done_time = Now();
      --pending;
      stack.pop_back();
    }
    CloseWindow();
  }
  void RunAll() {
    for (Stream* s : streams) RunUntil(s->last);
    RunUntil(legacy.last);
  }

  Stream* Resolve(cudaStream_t s) { return s == nullptr ? &legacy : s; }
  bool Valid(cudaStream_t s) const { return s == nullptr || streams.count(s) > 0; }

  // Queues `run` on stream `s` after everything it must follow.
  std::shared_ptr<Op> Enqueue(cudaStream_t s, std::string what, std::function<void()> run) {
    auto op = std::make_shared<Op>();
    op->what = std::move(what);
    op->run = std::move(run);
    Stream* st = Resolve(s);
    if (st->last && !st->last->done) op->deps.push_back(st->last);
    // The legacy default stream waits for, and is waited for by, every blocking stream.
    if (st == &legacy) {
      for (Stream* o : streams) {
        if (o->flags == cudaStreamDefault && o->last && !o->last->done) op->deps.push_back(o->last);
      }
    } else if (st->flags == cudaStreamDefault && legacy.last && !legacy.last->done) {
      op->deps.push_back(legacy.last);
    }
    st->last = op;
    if (++pending > kMaxPending) RunAll();
    return op;
  }

 private:
  Device() {
    if (const char* m = std::getenv("RSD_CUDA_EMU_MEMORY")) {
      const long long v = std::atoll(m);
      if (v > 0) limit = static_cast<size_t>(v);
    }
    if (const char* p = std::getenv("RSD_CUDA_EMU_PROTECT")) protect = std::string(p) != "0";
    InstallFaultHandler();
  }
  static void InstallFaultHandler();
};

thread_local cudaError_t t_last_error = cudaSuccess;

cudaError_t Fail(cudaError_t e) {
  t_last_error = e;
  return e;
}

// ---------------------------------------------------------------------------------------------
// Faults: a host access to device memory, or a kernel's access past an allocation or after free.

struct sigaction g_old_segv, g_old_bus;

struct ThreadCtx;
struct BlockRun;
thread_local BlockRun* t_block = nullptr;
thread_local ThreadCtx* t_thread = nullptr;
std::string WhereInKernel();

void OnFault(int sig, siginfo_t* info, void* uctx) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(info->si_addr);
  const std::string what = Device::Get().Describe(a);
  if (!what.empty()) {
    std::string msg;
    if (t_thread != nullptr) {
      msg = Format("a kernel accessed address %p, %s%s", info->si_addr, what.c_str(),
                   WhereInKernel().c_str());
    } else {
      msg = Format(
          "host code accessed address %p, %s: device memory is reachable only from "
          "kernels and cudaMemcpy",
          info->si_addr, what.c_str());
    }
    Die(msg);
  }
  // Not ours: hand it to whoever handled it before (a sanitizer, or the default action).
  struct sigaction& old = sig == SIGSEGV ? g_old_segv : g_old_bus;
  if (old.sa_flags & SA_SIGINFO) {
    old.sa_sigaction(sig, info, uctx);
  } else if (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN) {
    signal(sig, SIG_DFL);
    raise(sig);
  } else {
    old.sa_handler(sig);
  }
}

void Device::InstallFaultHandler() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = OnFault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_old_segv);
  sigaction(SIGBUS, &sa, &g_old_bus);
}

// ---------------------------------------------------------------------------------------------
// Threads as fibers

struct FiberStack {
  void* map = nullptr;
  size_t size = 0;  // usable bytes above the guard page
  void* bottom() const { return static_cast<uint8_t*>(map) + kPage; }
  void* top() const { return static_cast<uint8_t*>(map) + kPage + size; }
};

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

}  // namespace

namespace detail {
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

namespace {

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

std::string WhereInKernel() {
  if (t_block == nullptr || t_thread == nullptr) return "";
  const BlockRun& b = *t_block;
  const dim3& t = t_thread->idx;
  return Format(" (kernel %s, block (%u,%u,%u), thread (%u,%u,%u))", b.kernel, b.bidx.x, b.bidx.y,
                b.bidx.z, t.x, t.y, t.z);
}

ThreadCtx& Self() {
  if (t_thread == nullptr) Die("a device function was called outside a kernel");
  return *t_thread;
}

// The scheduler's side of the switches: its saved stack pointer and (under ASan) its stack.
thread_local void* t_sched_sp = nullptr;
#if defined(RSD_EMU_ASAN)
thread_local const void* t_sched_bottom = nullptr;
thread_local size_t t_sched_size = 0;
#endif

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

bool Ordered(const detail::Access& a, const ThreadCtx& t, uint64_t block_gen) {
  if (a.tid == -1 || a.tid == t.tid) return true;
  if (a.block_gen < block_gen) return true;
  return a.tid >= 0 && a.tid / 32 == t.warp && a.warp_gen < t.warp_gen;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Device side

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

// ---------------------------------------------------------------------------------------------
// Runtime API

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError:
      return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer:
      return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection:
      return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice:
      return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    case cudaErrorIllegalAddress:
      return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources:
      return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInitializationError:
      return "initialization error";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer:
      return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection:
      return "invalid copy direction for memcpy";
    case cudaErrorNoDevice:
      return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorNotReady:
      return "device not ready";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources:
      return "too many resources requested for launch";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
  }
  return "unknown error";
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return t_last_error; }

cudaError_t cudaGetDeviceCount(int* count) {
  Device::Get();
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : Fail(cudaErrorInvalidDevice);
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device != 0) return Fail(cudaErrorInvalidDevice);
  Device& d = Device::Get();
  std::memset(p, 0, sizeof(*p));
  std::snprintf(p->name, sizeof(p->name), "cuda-emu (host emulation of a CUDA device)");
  p->totalGlobalMem = d.limit;
  p->sharedMemPerBlock = kMaxShared;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = kMaxThreads;
  p->maxThreadsDim[0] = 1024;
  p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7FFFFFFF;
  p->maxGridSize[1] = 65535;
  p->maxGridSize[2] = 65535;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 1;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return Fail(cudaErrorInvalidDevice);
  *value = attr == cudaDevAttrMultiProcessorCount ? 1 : 0;
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  *total_bytes = d.limit;
  *free_bytes = d.limit - std::min(d.limit, d.stats.device_bytes);
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  d.RunAll();
  return cudaSuccess;
}

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

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  auto* s = new Stream();
  s->flags = flags;
  d.streams.insert(s);
  *stream = s;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (stream == nullptr || !d.streams.count(stream)) return Fail(cudaErrorInvalidResourceHandle);
  d.RunUntil(stream->last);  // queued work still completes
  d.streams.erase(stream);
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.Valid(stream)) return Fail(cudaErrorInvalidResourceHandle);
  d.RunUntil(d.Resolve(stream)->last);
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.Valid(stream) || !d.events.count(event)) return Fail(cudaErrorInvalidResourceHandle);
  if (!event->op) return cudaSuccess;  // never recorded: nothing to wait for
  std::shared_ptr<Op> marker = event->op;
  std::shared_ptr<Op> op = d.Enqueue(stream, "wait event", nullptr);
  if (!marker->done) op->deps.push_back(marker);
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  auto* e = new Event();
  e->flags = flags;
  d.events.insert(e);
  *event = e;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.events.erase(event)) return Fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.Valid(stream) || !d.events.count(event)) return Fail(cudaErrorInvalidResourceHandle);
  event->op = d.Enqueue(stream, "event", nullptr);
  event->queries = 0;
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.events.count(event)) return Fail(cudaErrorInvalidResourceHandle);
  d.RunUntil(event->op);
  return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.events.count(event)) return Fail(cudaErrorInvalidResourceHandle);
  if (!event->op || event->op->done) return cudaSuccess;
  // The first query of a pending event says not ready; the next one lets the work run, so a
  // polling loop terminates but code that assumes completion without waiting is caught.
  if (event->queries++ == 0) return cudaErrorNotReady;
  d.RunUntil(event->op);
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.events.count(start) || !d.events.count(end)) return Fail(cudaErrorInvalidResourceHandle);
  if ((start->flags | end->flags) & cudaEventDisableTiming)
    return Fail(cudaErrorInvalidResourceHandle);
  if (!start->op || !end->op || !start->op->done || !end->op->done) return Fail(cudaErrorNotReady);
  *ms = static_cast<float>((end->op->done_time - start->op->done_time) * 1e3);
  return cudaSuccess;
}

void SetMemoryLimit(size_t bytes) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  d.limit = bytes;
}

Stats GetStats() {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  return d.stats;
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
