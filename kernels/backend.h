// The device-neutral compute interface the transformer is written against (DESIGN.md section 3).
// Buffers are backend memory (host memory on the CPU backend, device memory on CUDA); the caller
// moves bytes in and out explicitly with the Copy* calls and never dereferences backend memory.
//
// Errors: this interface is where a device's errors become an absl::Status (the device math
// underneath, kernels/cpu and kernels/cuda, stays plain C++ and returns cudaError_t on CUDA).
// Allocation failures are RESOURCE_EXHAUSTED naming what was allocated and how many bytes; a
// failed launch is INTERNAL naming the op. Ops may run asynchronously (CUDA queues them on a
// stream): a fault inside one surfaces at the next CopyToHost or Synchronize, naming the last op
// queued. After an error the backend stays usable for later calls.
//
// Numerics contract (DESIGN.md section 2), held by every implementation:
//  - every output row of every op is computed with one fixed reduction order that does not depend
//    on the number of rows in the call, the number of threads, the ISA path or the device;
//  - attention walks keys in fixed chunks of `block_tokens` positions from position 0 and merges
//    the chunks' partial softmax results in order.
// Backends with the same numerics_id() give bit-identical results (the CPU and CUDA backends
// share one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace rsd {

// What a backend computes on, for `rsd-run info` and worker registration.
struct DeviceInfo {
  std::string kind;             // "cpu", "cuda", "cuda-emu"
  std::string name;             // e.g. "NVIDIA H100 80GB HBM3", or the CPU ISA path
  int index = 0;                // CUDA device ordinal
  size_t memory_total = 0;      // bytes the device has (0: host memory, not tracked)
  size_t memory_limit = 0;      // bytes this backend may allocate (0: no limit of its own)
  size_t memory_used = 0;       // bytes this backend holds now
  double memory_bandwidth = 0;  // peak bytes per second where the device reports it, else 0
};

class Backend {
 public:
  virtual ~Backend() = default;

  // e.g. "cpu/avx2". `numerics_id` names everything that affects bits: backend, ISA path where it
  // matters, kernel version. Two backends with the same numerics_id give bit-identical results.
  virtual std::string name() const = 0;
  virtual std::string numerics_id() const = 0;
  virtual int threads() const = 0;
  virtual DeviceInfo device_info() const = 0;

  // Backend memory. RESOURCE_EXHAUSTED naming `what` and the bytes when it cannot be had. Zero
  // bytes gives a valid, unique pointer.
  virtual absl::StatusOr<DevicePtr<void>> Alloc(size_t bytes, std::string_view what) = 0;
  virtual void Free(DevicePtr<void> p) = 0;
  // Host memory the device copies to and from at full speed (pinned on CUDA; plain on the CPU).
  virtual absl::StatusOr<void*> AllocHost(size_t bytes, std::string_view what) = 0;
  virtual void FreeHost(void* p) = 0;
  // Host -> backend; may return before the copy is done (`src` may be reused at once).
  virtual absl::Status CopyToDevice(DevicePtr<void> dst, const void* src, size_t n) = 0;
  // Backend -> host, after all queued work; returns when the bytes are in `dst`.
  virtual absl::Status CopyToHost(void* dst, DevicePtr<const void> src, size_t n) = 0;
  virtual absl::Status CopyOnDevice(DevicePtr<void> dst, DevicePtr<const void> src, size_t n) = 0;
  virtual absl::Status Fill(DevicePtr<void> dst, uint8_t byte, size_t n) = 0;
  // Waits for queued work and reports a fault in it.
  virtual absl::Status Synchronize() = 0;

  // Transfers between host memory from AllocHost (pinned on CUDA) and backend memory on a stream
  // of their own, so they overlap with compute (the CPU backend copies at once). A transfer to the
  // host starts after all compute queued before it; a transfer to the device is seen by compute
  // queued after the next FenceTransfers(). The host memory must stay untouched until
  // WaitTransfers() returns.
  virtual absl::Status CopyToHostAsync(void* dst, DevicePtr<const void> src, size_t n) = 0;
  virtual absl::Status CopyToDeviceAsync(DevicePtr<void> dst, const void* src, size_t n) = 0;
  // Compute queued from now on waits for the transfers queued so far (the host does not wait).
  virtual absl::Status FenceTransfers() = 0;
  // The host waits for the transfers queued so far.
  virtual absl::Status WaitTransfers() = 0;

  // Fills weight matrix `w` (w->data: backend memory of w->bytes(), allocated by the caller) from
  // the file's row-major bytes at `src`. A backend may arrange the same bytes its own way for its
  // kernels and say so in w->layout; Embed and MatMul read either layout.
  virtual absl::Status UploadWeight(const void* src, Tensor* w) {
    return CopyToDevice(w->device(), src, w->bytes());
  }

  // out[i, :] = dequantized table row ids[i]. table [vocab, d] any dtype; out [n, d] f32.
  virtual absl::Status Embed(const Tensor& table, const int32_t* ids, Tensor out) = 0;
  // out = x / sqrt(mean(x^2) + eps) * w, per row. x, out [n, d] f32; w [d] f32.
  virtual absl::Status RmsNorm(const Tensor& x, const float* w, float eps, Tensor out) = 0;
  // out = x · w^T (+ bias). x [n, k] f32; w [m, k] any dtype; bias [m] f32 or null; out [n, m].
  virtual absl::Status MatMul(const Tensor& x, const Tensor& w, const float* bias, Tensor out) = 0;
  // One weight of MatMulShared: out = x · w^T (+ bias).
  struct MatMulTarget {
    const Tensor* w;
    const float* bias;
    Tensor out;
  };
  // MatMul of one input against several weights (q, k and v; gate and up): the same bits as one
  // MatMul per target. A backend may prepare x once for all of them (the CPU backend quantizes it
  // once).
  virtual absl::Status MatMulShared(const Tensor& x, std::span<const MatMulTarget> targets) {
    for (const MatMulTarget& t : targets) {
      if (absl::Status st = MatMul(x, *t.w, t.bias, t.out); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  // Rotates each head of x [n, n_heads * head_dim] in place at positions pos[n].
  virtual absl::Status Rope(Tensor x, int n_heads, int head_dim, const int32_t* pos,
                            const RopeTable& table) = 0;
  // Writes K and V rows [n, kv_dim] of `layer` to pool slots: row i goes to block slot_block[i],
  // token offset slot_offset[i].
  virtual absl::Status StoreKv(const Tensor& k, const Tensor& v, int layer,
                               const int32_t* slot_block, const int32_t* slot_offset,
                               const KvPoolView& pool) = 0;
  // out[i] = softmax(q[i] · K^T * scale) · V over rows[i]'s keys, per head (GQA: query head h
  // reads K/V head h / (n_heads / n_kv_heads)). q, out [n, n_heads * head_dim]; rows [n].
  virtual absl::Status Attention(const Tensor& q, const AttentionRow* rows, int layer,
                                 const AttentionShape& shape, const KvPoolView& pool,
                                 Tensor out) = 0;
  // Chunked attention, for K/V that is not all in the pool at once (blocks rebuilt chunk by chunk
  // into scratch blocks): Begin resets `state` for q's rows; Chunks merges chunks
  // [chunk_begin, chunk_end) of each row (chunk c of row i is block rows[i].block_table[c]; rows
  // whose keys end earlier skip it); Finish writes out = acc / l. Chunks must be merged in order.
  // Attention(...) == Begin + Chunks(0, all) + Finish, bit for bit.
  virtual absl::Status AttentionBegin(const AttentionShape& shape, int64_t n_rows,
                                      AttentionState state) = 0;
  virtual absl::Status AttentionChunks(const Tensor& q, const AttentionRow* rows, int layer,
                                       int chunk_begin, int chunk_end, const AttentionShape& shape,
                                       const KvPoolView& pool, AttentionState state) = 0;
  virtual absl::Status AttentionFinish(const AttentionShape& shape, int64_t n_rows,
                                       AttentionState state, Tensor out) = 0;
  // out = silu(gate) * up. All [n, ff] f32.
  virtual absl::Status SiluMul(const Tensor& gate, const Tensor& up, Tensor out) = 0;
  // x += y. Both [n, d] f32.
  virtual absl::Status Add(Tensor x, const Tensor& y) = 0;

  virtual BackendCounters counters() const = 0;
  virtual void ResetCounters() = 0;
};

}  // namespace rsd
