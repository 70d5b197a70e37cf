// The CPU backend: host memory, a thread pool, and an ISA path chosen at run time.
#pragma once

#include <memory>
#include <string>

#include "kernels/backend.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/thread_pool.h"

namespace rsd::cpu {

// Bumped whenever a kernel's arithmetic changes; part of the numerics fingerprint.
constexpr int kCpuKernelVersion = 1;

class CpuBackend final : public Backend {
 public:
  // `isa` must be supported by this CPU (IsaSupported); `threads` >= 1.
  CpuBackend(int threads, Isa isa);
  ~CpuBackend() override;

  std::string name() const override;
  // All CPU ISA paths share one arithmetic, so the ISA is not part of the numerics id.
  std::string numerics_id() const override;
  int threads() const override { return pool_.size(); }
  Isa isa() const { return isa_; }

  void* Alloc(size_t bytes) override;
  void Free(void* p) override;
  void CopyToDevice(void* dst, const void* src, size_t n) override;
  void CopyToHost(void* dst, const void* src, size_t n) override;
  void CopyOnDevice(void* dst, const void* src, size_t n) override;
  void Fill(void* dst, uint8_t byte, size_t n) override;
  void Synchronize() override {}

  void Embed(const Tensor& table, const int32_t* ids, Tensor out) override;
  void RmsNorm(const Tensor& x, const float* w, float eps, Tensor out) override;
  void MatMul(const Tensor& x, const Tensor& w, const float* bias, Tensor out) override;
  void Rope(Tensor x, int n_heads, int head_dim, const int32_t* pos,
            const RopeTable& table) override;
  void StoreKv(const Tensor& k, const Tensor& v, int layer, const int32_t* slot_block,
               const int32_t* slot_offset, const KvPoolView& pool) override;
  void Attention(const Tensor& q, const AttentionRow* rows, int layer,
                 const AttentionShape& shape, const KvPoolView& pool, Tensor out) override;
  void AttentionBegin(const AttentionShape& shape, int64_t n_rows, AttentionState state) override;
  void AttentionChunks(const Tensor& q, const AttentionRow* rows, int layer, int chunk_begin,
                       int chunk_end, const AttentionShape& shape, const KvPoolView& pool,
                       AttentionState state) override;
  void AttentionFinish(const AttentionShape& shape, int64_t n_rows, AttentionState state,
                       Tensor out) override;
  void SiluMul(const Tensor& gate, const Tensor& up, Tensor out) override;
  void Add(Tensor x, const Tensor& y) override;

  BackendCounters counters() const override { return counters_; }
  void ResetCounters() override { counters_ = BackendCounters{}; }

 private:
  struct Ctx;
  ThreadPool pool_;
  Isa isa_;
  BackendCounters counters_;
};

}  // namespace rsd::cpu
