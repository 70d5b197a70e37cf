// The plain data types of the compute interface: tensor views, the K/V pool layout, attention
// arguments. Plain C++ with no dependencies, shared by the CPU kernels, the CUDA kernels (host and
// device code) and the Backend interface (kernels/backend.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/dtype.h"

namespace rsd {

// An address in backend memory (device memory on a GPU). Host code may offset it and hand it to
// the backend, but cannot read or write through it: only kernels and the backend's copies do,
// with get(). The Backend's memory calls take these, so the type says which side of a copy is the
// device's.
template <class T>
class DevicePtr {
 public:
  constexpr DevicePtr() = default;
  constexpr explicit DevicePtr(T* p) : p_(p) {}
  // float -> void, T -> const T, as the raw pointers convert.
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  constexpr DevicePtr(DevicePtr<U> other) : p_(other.get()) {}  // NOLINT: as T* converts
  constexpr DevicePtr operator+(int64_t n) const { return DevicePtr(p_ + n); }
  constexpr T* get() const { return p_; }
  constexpr explicit operator bool() const { return p_ != nullptr; }

 private:
  T* p_ = nullptr;
};

// Names raw backend memory (a Tensor's data, a workspace buffer) as such.
template <class T>
constexpr DevicePtr<T> DeviceMemory(T* p) {
  return DevicePtr<T>(p);
}

// How a weight matrix's bytes are arranged in backend memory. kRows: row-major, each row its
// file's blocks. kPacked16: a backend's own arrangement of the same bytes (the CPU AVX-512 VNNI
// path's groups of 16 rows, kernels/cpu/packed_weights.h); only that backend reads it.
enum class WeightLayout : uint8_t { kRows = 0, kPacked16 = 1 };

// A 2-D view of backend memory: [rows, cols] of `dtype` (block types: whole blocks), row-major
// unless a weight's `layout` says otherwise (then Rows() does not apply).
struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  WeightLayout layout = WeightLayout::kRows;

  size_t row_bytes() const { return DTypeRowBytes(dtype, cols); }
  size_t bytes() const { return row_bytes() * static_cast<size_t>(rows); }
  float* f32() const { return static_cast<float*>(data); }
  DevicePtr<void> device() const { return DevicePtr<void>(data); }
  Tensor Rows(int64_t begin, int64_t n) const {
    return Tensor{static_cast<uint8_t*>(data) + row_bytes() * begin, dtype, n, cols};
  }
};

// The hot K/V pool's layout. Block `b` holds, for every layer, `block_tokens` K rows then
// `block_tokens` V rows of `kv_dim` = n_kv_heads * head_dim values, each an IEEE half (F16, the
// bits of kernels/half.h's F32ToF16 of the projection; as llama.cpp stores its cache):
//   K(b, l, t) at base + ((b * n_layers + l) * 2 + 0) * block_tokens * kv_dim + t * kv_dim
//   V(b, l, t) at base + ((b * n_layers + l) * 2 + 1) * block_tokens * kv_dim + t * kv_dim
using KvElement = uint16_t;  // F16 bits
inline constexpr size_t kKvElementBytes = sizeof(KvElement);

struct KvPoolView {
  DevicePtr<KvElement> base;
  int32_t n_blocks = 0;
  int n_layers = 0;
  int kv_dim = 0;
  int block_tokens = 0;

  // Elements of one block (every layer's K and V rows) and of one layer's K and V rows in it.
  size_t block_elements() const { return static_cast<size_t>(n_layers) * layer_elements(); }
  size_t layer_elements() const { return static_cast<size_t>(2) * block_tokens * kv_dim; }
  size_t block_bytes() const { return block_elements() * kKvElementBytes; }
  DevicePtr<KvElement> K(int32_t block, int layer) const {
    return base +
           static_cast<int64_t>((static_cast<size_t>(block) * n_layers + layer) * layer_elements());
  }
  DevicePtr<KvElement> V(int32_t block, int layer) const {
    return K(block, layer) + static_cast<int64_t>(block_tokens) * kv_dim;
  }
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
  // An upper bound of the rows' n_keys (0: unknown). A device backend sizes its work by it
  // instead of reading the rows back; it never changes a result.
  int32_t max_keys = 0;
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
  uint64_t matmul_rows = 0;      // sum over calls of activation rows
  uint64_t matmul_max_rows = 0;  // most rows in one call
  uint64_t matmul_min_rows = ~0ull;
  uint64_t attention_rows = 0;
  uint64_t attention_chunks = 0;
  int max_threads_used = 0;      // most distinct threads that did work in one parallel op
  uint64_t device_launches = 0;  // kernels launched on a device (CUDA; 0 on the CPU)
};

}  // namespace rsd
