// cuda-emu: device memory, the per-stream work queues, and the fault handler that turns a stray
// access to device memory into a message naming the allocation (see runtime.h for why).
#include "kernels/cuda/emu/device.h"

#include <signal.h>
#include <sys/mman.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/emu/fibers.h"

namespace rsd::emu::internal {

void Die(const std::string& message) {
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
// Memory and queues

const Allocation* Device::FindLive(const void* p) const {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = live.upper_bound(a);
  if (it == live.begin()) return nullptr;
  --it;
  const Allocation& al = it->second;
  return a <= reinterpret_cast<uintptr_t>(al.user) + al.bytes ? &al : nullptr;
}

const Allocation* Device::FindRange(const void* p, size_t n) const {
  const Allocation* al = FindLive(p);
  if (al == nullptr) return nullptr;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), u = reinterpret_cast<uintptr_t>(al->user);
  return a + n <= u + al->bytes ? al : nullptr;
}

bool Device::PinnedRange(const void* p, size_t n) const {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = pinned.upper_bound(a);
  if (it == pinned.begin()) return false;
  --it;
  return a + n <= it->first + it->second;
}

std::string Device::Describe(uintptr_t a) const {
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

void Device::SetProtection(int prot) {
  if (!protect) return;
  for (auto& [u, al] : live) {
    if (mprotect(al.map, al.data_len, prot) != 0) Die("mprotect failed");
  }
}

void Device::OpenWindow() {
  if (window_open) return;
  SetProtection(PROT_READ | PROT_WRITE);
  window_open = true;
}

void Device::CloseWindow() {
  if (!window_open) return;
  SetProtection(PROT_NONE);
  window_open = false;
}

void Device::RunUntil(const std::shared_ptr<Op>& target) {
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

void Device::RunAll() {
  for (Stream* s : streams) RunUntil(s->last);
  RunUntil(legacy.last);
}

std::shared_ptr<Op> Device::Enqueue(cudaStream_t s, std::string what, std::function<void()> run) {
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

Device::Device() {
  if (const char* m = std::getenv("RSD_CUDA_EMU_MEMORY")) {
    const long long v = std::atoll(m);
    if (v > 0) limit = static_cast<size_t>(v);
  }
  if (const char* p = std::getenv("RSD_CUDA_EMU_PROTECT")) protect = std::string(p) != "0";
  InstallFaultHandler();
}

// ---------------------------------------------------------------------------------------------
// Faults: a host access to device memory, or a kernel's access past an allocation or after free.

namespace {

struct sigaction g_old_segv, g_old_bus;

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

}  // namespace

void Device::InstallFaultHandler() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = OnFault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_old_segv);
  sigaction(SIGBUS, &sa, &g_old_bus);
}

}  // namespace rsd::emu::internal
