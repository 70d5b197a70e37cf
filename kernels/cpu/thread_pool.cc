#include "kernels/cpu/thread_pool.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>

namespace rsd::cpu {

namespace {
// How long a worker spins for the next op before it sleeps, and the caller for the workers before
// it yields. A decode step issues hundreds of parallel ops a few to a few hundred microseconds
// apart, and a sleeping worker's wake-up (a futex wake, tens of microseconds on a virtual machine)
// would cost more than most ops: the spin must outlast the gaps within a step (a count of PAUSEs
// does not: a PAUSE takes 10 ns on one CPU and 140 on another). Between steps an idle worker
// sleeps after this long, and on a shared machine a spinning caller soon lets a descheduled peer
// run.
constexpr auto kSpinTime = std::chrono::microseconds(500);
// PAUSEs between looks at the clock.
constexpr int kPausesPerCheck = 16;

// Spins until done() or kSpinTime has passed; returns done(). The clock is first read after one
// round of PAUSEs, so an op that is already done costs no clock read.
template <class Done>
bool SpinUntil(Done done) {
  std::chrono::steady_clock::time_point deadline{};
  for (bool first = true;; first = false) {
    for (int i = 0; i < kPausesPerCheck; ++i) {
      if (done()) return true;
      _mm_pause();
    }
    const auto now = std::chrono::steady_clock::now();
    if (first) {
      deadline = now + kSpinTime;
    } else if (now >= deadline) {
      return done();
    }
  }
}
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  ranges_.resize(n_threads_);
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

int ThreadPool::ParallelFor(int64_t n, int64_t grain,
                            const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return 0;
  grain = std::max<int64_t>(1, grain);
  const int64_t units = (n + grain - 1) / grain;
  const int used = static_cast<int>(std::min<int64_t>(n_threads_, units));
  for (int t = 0; t < n_threads_; ++t) {
    int64_t ub = units * t / used, ue = units * (t + 1) / used;
    if (t >= used) ub = ue = units;
    ranges_[t] = {std::min(n, ub * grain), std::min(n, ue * grain)};
  }
  if (used == 1) {
    fn(ranges_[0].first, ranges_[0].second, 0);
    return 1;
  }
  job_ = &fn;
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  fn(ranges_[0].first, ranges_[0].second, 0);
  const auto all_done = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!SpinUntil(all_done)) {
    while (!all_done()) std::this_thread::yield();
  }
  job_ = nullptr;
  return used;
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = 0;
    const auto posted = [&] {
      gen = generation_.load(std::memory_order_acquire);
      return gen != seen;
    };
    if (!SpinUntil(posted)) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    if (stop_.load()) return;
    auto [b, e] = ranges_[index];
    if (b < e) (*job_)(b, e, index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace rsd::cpu
