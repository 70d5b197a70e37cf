// A fixed pool of worker threads for data-parallel kernels. Work is split statically into
// contiguous ranges, one per thread; every output element is produced by exactly one thread with
// the same code, so results never depend on the thread count (DESIGN.md section 2).
// Run() is not reentrant and must be called from one thread at a time (the engine's compute thread).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rsd::cpu {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(begin, end, thread_index) for a partition of [0, n) into at most size() ranges
  // (ranges are multiples of `grain` except the last). Returns when all are done, with the number
  // of threads that got a non-empty range.
  int ParallelFor(int64_t n, int64_t grain,
                  const std::function<void(int64_t, int64_t, int)>& fn);

 private:
  void WorkerLoop(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  std::vector<std::pair<int64_t, int64_t>> ranges_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace rsd::cpu
