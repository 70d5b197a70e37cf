// Fixed-chunk attention (kernels/cpu/attention.cc's order, DESIGN.md section 2). Each chunk of
// block_tokens keys of one (row, head) is one warp's work: scores as DotF32 (fused multiply-adds in
// half-warps, the 16-lane fold through shuffles) times the scale, the chunk maximum in key order,
// Exp of each score minus it, the sum of those in key order, and each dimension's V accumulation in
// key order. Chunks are independent, so every chunk of a call is computed at once; then one block
// per (row, head) merges them into the running state strictly in chunk order, which gives the bits
// of the CPU's chunk-after-chunk walk. K and V are F16 in the pool, converted exactly as they are
// read (kernels/half.h, as the CPU does).
#include "kernels/cuda/exp.cuh"
#include "kernels/cuda/ops.cuh"
#include "kernels/half.h"

namespace rsd::RSD_CUDA_NS {
namespace {

using half::F16ToF32;

constexpr int kMaxChunk = 1024;
constexpr int kMaxHeadDim = 512;

__device__ __forceinline__ const uint16_t* PoolK(const uint16_t* base, int64_t block, int layer,
                                                 int n_layers, int block_tokens, int kv_dim) {
  return base + (block * n_layers + layer) * 2 * static_cast<int64_t>(block_tokens) * kv_dim;
}

__global__ void BeginKernel(int64_t items, int head_dim, float* m, float* l, float* acc) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < items * head_dim) acc[i] = 0.0f;
  if (i < items) {
    m[i] = NegInf();
    l[i] = 0.0f;
  }
}

__global__ void PartialKernel(const float* q, int64_t q_cols, const AttentionRow* rows, int n_heads,
                              int group, int head_dim, float scale, int layer, int c0, int nc,
                              const uint16_t* pool, int n_layers, int block_tokens, int kv_dim,
                              float* partials) {
  RSD_SHARED(float, scores, kMaxChunk);
  RSD_SHARED(float, probs, kMaxChunk);
  RSD_SHARED(float, chunk_max, 1);
  const int64_t item = blockIdx.x;
  const int c = c0 + static_cast<int>(blockIdx.y);
  const int64_t r = item / n_heads;
  const int h = static_cast<int>(item % n_heads);
  const int lane = threadIdx.x;
  const AttentionRow row = rows[r];
  const int n_chunks = (row.n_keys + block_tokens - 1) / block_tokens;
  if (c >= n_chunks) return;  // the whole block leaves together
  const int n = min(block_tokens, row.n_keys - c * block_tokens);
  const uint16_t* K = PoolK(pool, row.block_table[c], layer, n_layers, block_tokens, kv_dim) +
                      static_cast<int64_t>(h / group) * head_dim;
  const uint16_t* V = K + static_cast<int64_t>(block_tokens) * kv_dim;
  const float* qh = q + r * q_cols + static_cast<int64_t>(h) * head_dim;
  const int half_warp = lane / 16, l16 = lane % 16;
  for (int j0 = 0; j0 < n; j0 += 2) {
    const int j = j0 + half_warp;
    float acc = 0.0f;
    if (j < n) {
      const uint16_t* kj = K + static_cast<int64_t>(j) * kv_dim;
      for (int i = l16; i < head_dim; i += 16) acc = __fmaf_rn(qh[i], F16ToF32(kj[i]), acc);
    }
    for (int w = 8; w >= 1; w /= 2) acc = __fadd_rn(acc, __shfl_down_sync(0xFFFFFFFFu, acc, w, 16));
    if (j < n && l16 == 0) scores[j] = __fmul_rn(acc, scale);
  }
  __syncwarp();
  if (lane == 0) {
    float mc = NegInf();
    for (int j = 0; j < n; ++j) {
      const float sj = scores[j];
      mc = mc < sj ? sj : mc;  // std::max's order
    }
    chunk_max[0] = mc;
  }
  __syncwarp();
  const float mc = chunk_max[0];
  for (int j = lane; j < n; j += 32) probs[j] = Exp(__fsub_rn(scores[j], mc));
  __syncwarp();
  float* out = partials + (item * nc + blockIdx.y) * (head_dim + 2);
  if (lane == 0) {
    float lc = 0.0f;
    for (int j = 0; j < n; ++j) lc = __fadd_rn(lc, probs[j]);
    out[0] = mc;
    out[1] = lc;
  }
  for (int i = lane; i < head_dim; i += 32) {
    float ca = 0.0f;
    for (int j = 0; j < n; ++j) {
      ca = __fmaf_rn(probs[j], F16ToF32(V[static_cast<int64_t>(j) * kv_dim + i]), ca);
    }
    out[2 + i] = ca;
  }
}

__global__ void MergeKernel(const AttentionRow* rows, int n_heads, int head_dim, int block_tokens,
                            int c0, int nc, const float* partials, float* m, float* l, float* acc,
                            float* chunk_max, float* chunk_sum, int chunk_stride,
                            unsigned long long* chunk_count) {
  const int64_t item = blockIdx.x;
  const int64_t r = item / n_heads;
  const int n_chunks = (rows[r].n_keys + block_tokens - 1) / block_tokens;
  const int hi = min(c0 + nc, n_chunks);
  float mm = m[item], ll = l[item];
  float* a_row = acc + item * head_dim;
  for (int c = c0; c < hi; ++c) {
    const float* p = partials + (item * nc + (c - c0)) * (head_dim + 2);
    const float mc = p[0], lc = p[1];
    const float mn = mm < mc ? mc : mm;  // std::max(m, mc)
    const float a = Exp(__fsub_rn(mm, mn)), b = Exp(__fsub_rn(mc, mn));
    ll = __fadd_rn(__fmul_rn(ll, a), __fmul_rn(lc, b));
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
      a_row[i] = __fadd_rn(__fmul_rn(a_row[i], a), __fmul_rn(p[2 + i], b));
    }
    mm = mn;
    if (threadIdx.x == 0 && chunk_max != nullptr) {
      chunk_max[item * chunk_stride + c] = mc;
      chunk_sum[item * chunk_stride + c] = lc;
    }
  }
  __syncthreads();  // every thread has read m and l before thread 0 overwrites them
  if (threadIdx.x == 0) {
    m[item] = mm;
    l[item] = ll;
    if (item % n_heads == 0 && hi > c0 && chunk_count != nullptr) {
      atomicAdd(chunk_count, static_cast<unsigned long long>(hi - c0));
    }
  }
}

__global__ void FinishKernel(int n_heads, int head_dim, const float* l, const float* acc,
                             float* out, int64_t out_cols) {
  const int64_t item = blockIdx.x;
  const int64_t r = item / n_heads;
  const int h = static_cast<int>(item % n_heads);
  float* o = out + r * out_cols + static_cast<int64_t>(h) * head_dim;
  for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
    o[i] = __fdiv_rn(acc[item * head_dim + i], l[item]);
  }
}

}  // namespace

int AttentionPartialFloats(int head_dim) { return head_dim + 2; }

cudaError_t LaunchAttentionBegin(int64_t items, int head_dim, AttentionState st,
                                 cudaStream_t stream) {
  const int64_t n = items * head_dim > items ? items * head_dim : items;
  if (n == 0) return cudaSuccess;
  RSD_LAUNCH(BeginKernel, static_cast<unsigned>((n + 255) / 256), 256, stream, items, head_dim,
             st.m, st.l, st.acc);
  return cudaGetLastError();
}

cudaError_t LaunchAttentionPartials(const float* q, int64_t q_cols, const AttentionRow* rows,
                                    int64_t n_rows, int layer, int c0, int nc,
                                    const AttentionShape& shape, const KvPoolView& pool,
                                    float* partials, cudaStream_t stream) {
  if (pool.block_tokens > kMaxChunk || shape.head_dim > kMaxHeadDim || nc > 65535 ||
      shape.n_kv_heads <= 0 || shape.n_heads % shape.n_kv_heads != 0) {
    return cudaErrorInvalidValue;
  }
  if (n_rows == 0 || nc <= 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(n_rows * shape.n_heads), static_cast<unsigned>(nc));
  RSD_LAUNCH(PartialKernel, grid, 32, stream, q, q_cols, rows, shape.n_heads,
             shape.n_heads / shape.n_kv_heads, shape.head_dim, shape.scale, layer, c0, nc,
             static_cast<const uint16_t*>(pool.base.get()), pool.n_layers, pool.block_tokens,
             pool.kv_dim, partials);
  return cudaGetLastError();
}

cudaError_t LaunchAttentionMerge(const AttentionRow* rows, int64_t n_rows, int c0, int nc,
                                 const AttentionShape& shape, int block_tokens,
                                 const float* partials, AttentionState st,
                                 unsigned long long* chunk_count, cudaStream_t stream) {
  if (n_rows == 0 || nc <= 0) return cudaSuccess;
  RSD_LAUNCH(MergeKernel, static_cast<unsigned>(n_rows * shape.n_heads), 64, stream, rows,
             shape.n_heads, shape.head_dim, block_tokens, c0, nc, partials, st.m, st.l, st.acc,
             st.chunk_max, st.chunk_sum, st.chunk_stride, chunk_count);
  return cudaGetLastError();
}

cudaError_t LaunchAttentionFinish(int64_t n_rows, const AttentionShape& shape, AttentionState st,
                                  float* out, int64_t out_cols, cudaStream_t stream) {
  if (n_rows == 0) return cudaSuccess;
  RSD_LAUNCH(FinishKernel, static_cast<unsigned>(n_rows * shape.n_heads), 64, stream, shape.n_heads,
             shape.head_dim, st.l, st.acc, out, out_cols);
  return cudaGetLastError();
}

}  // namespace rsd::RSD_CUDA_NS
