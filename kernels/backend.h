// The device-neutral compute interface the transformer is written against (DESIGN.md section 3).
// Plain C++: no Abseil here (kernels/ is device math). Buffers are backend memory; the caller
// moves bytes in and out explicitly with the Copy* calls, so a device backend slots in unchanged.
//
// Numerics contract (DESIGN.md section 2), held by every implementation:
//  - every output row of every op is computed with one fixed reduction order that does not depend
//    on the number of rows in the call, the number of threads, or (on the CPU) the ISA path;
//  - attention walks keys in fixed chunks of `block_tokens` positions from position 0 and merges
//    the chunks' partial softmax results in order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/dtype.h"

namespace rsd {

// A 2-D row-major view of backend memory: [rows, cols] of `dtype` (block types: whole blocks).
struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;

  size_t row_bytes() const { return DTypeRowBytes(dtype, cols); }
  size_t bytes() const { return row_bytes() * static_cast<size_t>(rows); }
  float* f32() const { return static_cast<float*>(data); }
  Tensor Rows(int64_t begin, int64_t n) const {
    return Tensor{static_cast<uint8_t*>(data) + row_bytes() * begin, dtype, n, cols};
  }
};

// The hot K/V pool's layout. Block `b` holds, for every layer, `block_tokens` K rows then
// `block_tokens` V rows of `kv_dim` = n_kv_heads * head_dim values:
//   K(b, l, t) at base + ((b * n_layers + l) * 2 + 0) * block_tokens * kv_dim + t * kv_dim
//   V(b, l, t) at base + ((b * n_layers + l) * 2 + 1) * block_tokens * kv_dim + t * kv_dim
struct KvPoolView {
  float* base = nullptr;  // f32 K/V (the only hot dtype for now)
  int32_t n_blocks = 0;
  int n_layers = 0;
  int kv_dim = 0;
  int block_tokens = 0;

  size_t block_floats() const {
    return static_cast<size_t>(n_layers) * 2 * block_tokens * kv_dim;
  }
  float* K(int32_t block, int layer) const {
    return base + (static_cast<size_t>(block) * n_layers + layer) * 2 * block_tokens * kv_dim;
  }
  float* V(int32_t block, int layer) const { return K(block, layer) + block_tokens * kv_dim; }
};

// One query row of an attention call: the row attends to positions [0, n_keys) of a sequence
// whose blocks are listed in `block_table` (backend memory, one id per block_tokens positions).
struct AttentionRow {
  const int32_t* block_table = nullptr;
  int32_t n_keys = 0;
};

// Per-call shape of attention.
struct AttentionShape {
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 0.0f;  // usually 1/sqrt(head_dim)
};

// Running online-softmax state of a chunked attention call, per (row, head), in backend memory:
// m and l [n_rows * n_heads], acc [n_rows * n_heads * head_dim]. Merging chunk after chunk into it
// gives exactly the bits of one Attention call over the same chunks.
struct AttentionState {
  float* m = nullptr;
  float* l = nullptr;
  float* acc = nullptr;
  // Optional (lossy baselines such as H2O): each merged chunk's own max and sum, at
  // [(row * n_heads + head) * chunk_stride + chunk]. Writing them never changes the result.
  float* chunk_max = nullptr;
  float* chunk_sum = nullptr;
  int chunk_stride = 0;
};

// RoPE as a precomputed table of cos/sin per (position, pair): [max_pos, head_dim/2] each.
// Pairing is rotate-half: dimension i rotates with i + head_dim/2.
struct RopeTable {
  const float* cos = nullptr;
  const float* sin = nullptr;
  int max_pos = 0;
  int half_dim = 0;
};

// What the backend did, for tests that must prove a path ran.
struct BackendCounters {
  uint64_t matmul_calls = 0;
  uint64_t matmul_rows = 0;       // sum over calls of activation rows
  uint64_t matmul_max_rows = 0;   // most rows in one call
  uint64_t matmul_min_rows = ~0ull;
  uint64_t attention_rows = 0;
  uint64_t attention_chunks = 0;
  int max_threads_used = 0;       // most distinct threads that did work in one parallel op
};

class Backend {
 public:
  virtual ~Backend() = default;

  // e.g. "cpu/avx2". `numerics_id` names everything that affects bits: backend, ISA path where it
  // matters, kernel version. Two backends with the same numerics_id give bit-identical results.
  virtual std::string name() const = 0;
  virtual std::string numerics_id() const = 0;
  virtual int threads() const = 0;

  // Memory. Alloc returns nullptr when the device is out of memory.
  virtual void* Alloc(size_t bytes) = 0;
  virtual void Free(void* p) = 0;
  virtual void CopyToDevice(void* dst, const void* src, size_t n) = 0;
  virtual void CopyToHost(void* dst, const void* src, size_t n) = 0;
  virtual void CopyOnDevice(void* dst, const void* src, size_t n) = 0;
  virtual void Fill(void* dst, uint8_t byte, size_t n) = 0;
  // Waits for queued work (a no-op on the CPU).
  virtual void Synchronize() = 0;

  // out[i, :] = dequantized table row ids[i]. table [vocab, d] any dtype; out [n, d] f32.
  virtual void Embed(const Tensor& table, const int32_t* ids, Tensor out) = 0;
  // out = x / sqrt(mean(x^2) + eps) * w, per row. x, out [n, d] f32; w [d] f32.
  virtual void RmsNorm(const Tensor& x, const float* w, float eps, Tensor out) = 0;
  // out = x · w^T (+ bias). x [n, k] f32; w [m, k] any dtype; bias [m] f32 or null; out [n, m].
  virtual void MatMul(const Tensor& x, const Tensor& w, const float* bias, Tensor out) = 0;
  // Rotates each head of x [n, n_heads * head_dim] in place at positions pos[n].
  virtual void Rope(Tensor x, int n_heads, int head_dim, const int32_t* pos,
                    const RopeTable& table) = 0;
  // Writes K and V rows [n, kv_dim] of `layer` to pool slots: row i goes to block slot_block[i],
  // token offset slot_offset[i].
  virtual void StoreKv(const Tensor& k, const Tensor& v, int layer, const int32_t* slot_block,
                       const int32_t* slot_offset, const KvPoolView& pool) = 0;
  // out[i] = softmax(q[i] · K^T * scale) · V over rows[i]'s keys, per head (GQA: query head h
  // reads K/V head h / (n_heads / n_kv_heads)). q, out [n, n_heads * head_dim]; rows [n].
  virtual void Attention(const Tensor& q, const AttentionRow* rows, int layer,
                         const AttentionShape& shape, const KvPoolView& pool, Tensor out) = 0;
  // Chunked attention, for K/V that is not all in the pool at once (blocks rebuilt chunk by chunk
  // into scratch blocks): Begin resets `state` for q's rows; Chunks merges chunks
  // [chunk_begin, chunk_end) of each row (chunk c of row i is block rows[i].block_table[c]; rows
  // whose keys end earlier skip it); Finish writes out = acc / l. Chunks must be merged in order.
  // Attention(...) == Begin + Chunks(0, all) + Finish, bit for bit.
  virtual void AttentionBegin(const AttentionShape& shape, int64_t n_rows,
                              AttentionState state) = 0;
  virtual void AttentionChunks(const Tensor& q, const AttentionRow* rows, int layer,
                               int chunk_begin, int chunk_end, const AttentionShape& shape,
                               const KvPoolView& pool, AttentionState state) = 0;
  virtual void AttentionFinish(const AttentionShape& shape, int64_t n_rows, AttentionState state,
                               Tensor out) = 0;
  // out = silu(gate) * up. All [n, ff] f32.
  virtual void SiluMul(const Tensor& gate, const Tensor& up, Tensor out) = 0;
  // x += y. Both [n, d] f32.
  virtual void Add(Tensor x, const Tensor& y) = 0;

  virtual BackendCounters counters() const = 0;
  virtual void ResetCounters() = 0;
};

}  // namespace rsd
