// The CPU backend: host memory, a thread pool, and an ISA path chosen at run time.
#pragma once

#include <memory>
#include <string>

#include "kernels/backend.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/memory_ledger.h"

namespace rsd::cpu {

// Bumped whenever a kernel's arithmetic changes; part of the numerics fingerprint. The CUDA
// backend performs the same arithmetic and shares it (kernels/cuda/cuda_backend.h).
// 2: one exact integer sum per quantized block, one float multiply-add per block and row (1 had
// eight four-product lanes per block, each scaled and accumulated in float).
// 3: F32 dot lanes, AxpyF32 and attention's V accumulation use fused multiply-adds (one rounding).
constexpr int kCpuKernelVersion = 3;

class CpuBackend final : public Backend {
 public:
  // `isa` must be supported by this CPU (IsaSupported); `threads` >= 1; `memory_limit` caps what
  // Alloc hands out (0: no cap).
  CpuBackend(int threads, Isa isa, size_t memory_limit = 0);
  ~CpuBackend() override;

  std::string name() const override;
  // All CPU ISA paths share one arithmetic, so the ISA is not part of the numerics id.
  std::string numerics_id() const override;
  int threads() const override { return pool_.size(); }
  DeviceInfo device_info() const override;
  Isa isa() const { return isa_; }

  absl::StatusOr<DevicePtr<void>> Alloc(size_t bytes, std::string_view what) override;
  void Free(DevicePtr<void> p) override;
  absl::StatusOr<void*> AllocHost(size_t bytes, std::string_view what) override;
  void FreeHost(void* p) override;
  absl::Status CopyToDevice(DevicePtr<void> dst, const void* src, size_t n) override;
  absl::Status CopyToHost(void* dst, DevicePtr<const void> src, size_t n) override;
  absl::Status CopyOnDevice(DevicePtr<void> dst, DevicePtr<const void> src, size_t n) override;
  absl::Status Fill(DevicePtr<void> dst, uint8_t byte, size_t n) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }
  absl::Status CopyToHostAsync(void* dst, DevicePtr<const void> src, size_t n) override {
    return CopyToHost(dst, src, n);
  }
  absl::Status CopyToDeviceAsync(DevicePtr<void> dst, const void* src, size_t n) override {
    return CopyToDevice(dst, src, n);
  }
  absl::Status FenceTransfers() override { return absl::OkStatus(); }
  absl::Status WaitTransfers() override { return absl::OkStatus(); }

  // On the AVX-512 VNNI path, quantized weights of 16 rows or more are stored packed
  // (kernels/cpu/packed_weights.h); other paths keep the file's rows.
  absl::Status UploadWeight(const void* src, Tensor* w) override;
  absl::Status Embed(const Tensor& table, const int32_t* ids, Tensor out) override;
  absl::Status RmsNorm(const Tensor& x, const float* w, float eps, Tensor out) override;
  absl::Status MatMul(const Tensor& x, const Tensor& w, const float* bias, Tensor out) override;
  absl::Status MatMulShared(const Tensor& x, std::span<const MatMulTarget> targets) override;
  absl::Status Rope(Tensor x, int n_heads, int head_dim, const int32_t* pos,
                    const RopeTable& table) override;
  absl::Status StoreKv(const Tensor& k, const Tensor& v, int layer, const int32_t* slot_block,
                       const int32_t* slot_offset, const KvPoolView& pool) override;
  absl::Status Attention(const Tensor& q, const AttentionRow* rows, int layer,
                         const AttentionShape& shape, const KvPoolView& pool, Tensor out) override;
  absl::Status AttentionBegin(const AttentionShape& shape, int64_t n_rows,
                              AttentionState state) override;
  absl::Status AttentionChunks(const Tensor& q, const AttentionRow* rows, int layer,
                               int chunk_begin, int chunk_end, const AttentionShape& shape,
                               const KvPoolView& pool, AttentionState state) override;
  absl::Status AttentionFinish(const AttentionShape& shape, int64_t n_rows, AttentionState state,
                               Tensor out) override;
  absl::Status SiluMul(const Tensor& gate, const Tensor& up, Tensor out) override;
  absl::Status Add(Tensor x, const Tensor& y) override;

  BackendCounters counters() const override { return counters_; }
  void ResetCounters() override { counters_ = BackendCounters{}; }

 private:
  ThreadPool pool_;
  Isa isa_;
  BackendCounters counters_;
  MemoryLedger ledger_;
};

}  // namespace rsd::cpu
