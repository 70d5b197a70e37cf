#include "kernels/cpu/thread_pool.h"

#include <immintrin.h>

#include <algorithm>

namespace rsd::cpu {

namespace {
// Spin this many times before sleeping (workers) or yielding (the caller): a decode step issues
// hundreds of short parallel ops, and a wake-up per op would cost more than the op; but on a
// shared machine a spinning thread must soon let a descheduled peer run.
constexpr int kSpinIterations = 2000;
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
  for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
    if (spin < kSpinIterations) {
      _mm_pause();
    } else {
      std::this_thread::yield();
    }
  }
  job_ = nullptr;
  return used;
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < kSpinIterations; ++spin) {
      _mm_pause();
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
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
