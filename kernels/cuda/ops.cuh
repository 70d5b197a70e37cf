// CUDA launchers, one op per file. Each takes a stream and returns cudaError_t (the launch's
// error; faults surface at the next synchronization); the CUDA backend is the one place a CUDA
// error becomes a Status (STYLE.md). Every launcher performs the CPU backend's arithmetic in the
// CPU backend's order (kernels/cpu/), so results are bit-identical: the 16-lane F32 fold maps
// onto half-warps, the 8-lane x 4-accumulator quantized order onto a warp, the per-chunk
// attention walk onto one warp per (row, head, chunk) with the chunks merged in order.
// Pointers are device memory. Shapes as in kernels/tensor.h.
#pragma once

#include <cstdint>

#include "kernels/cuda/compat.cuh"
#include "kernels/tensor.h"

namespace rsd::RSD_CUDA_NS {

// out[i, :] = row ids[i] of `table` [vocab, cols] (any dtype) as f32; an id outside [0, vocab)
// gives a NaN row.
cudaError_t LaunchEmbed(DType type, const uint8_t* table, int64_t vocab, int64_t cols,
                        const int32_t* ids, int64_t n, float* out, cudaStream_t stream);
// out = x / sqrt(mean(x^2) + eps) * w per row. x, out [rows, cols] (may alias); w [cols].
cudaError_t LaunchRmsNorm(const float* x, const float* w, float eps, int rows, int cols,
                          float* out, cudaStream_t stream);
// out[r, o] = x[r, :] . w[o, :] (+ bias[o]) for F32, F16 and BF16 weights [m, k] (DotF32's order).
cudaError_t LaunchMatMulFloat(DType wtype, const float* x, int64_t n, int64_t k, const uint8_t* w,
                              int64_t m, const float* bias, float* out, cudaStream_t stream);
// Quantizes x [n, k] (k % 32 == 0) per 32-value block as QuantizeQ8Row: q [n, k], d, sum, s
// [n, k / 32].
cudaError_t LaunchQuantizeQ8(const float* x, int64_t n, int64_t k, int8_t* q, float* d,
                             int32_t* sum, float* s, cudaStream_t stream);
// out[r, o] = QuantDot(w row o, activation row r) (+ bias[o]) for Q8_0, Q4_0 and Q4_1 weights.
cudaError_t LaunchMatMulQuant(DType wtype, const int8_t* q, const float* d, const float* s,
                              int64_t n, int64_t k, const uint8_t* w, int64_t m, const float* bias,
                              float* out, cudaStream_t stream);
// Rotate-half RoPE in place on x [rows, n_heads * head_dim] at positions pos[rows], from a
// cos/sin table [max_pos, head_dim / 2].
cudaError_t LaunchRope(float* x, int rows, int n_heads, int head_dim, const int32_t* pos,
                       const float* cos_table, const float* sin_table, cudaStream_t stream);
// K and V rows [n, kv_dim] (row strides k_cols, v_cols) of `layer` to pool slots.
cudaError_t LaunchStoreKv(const float* k, int64_t k_cols, const float* v, int64_t v_cols, int64_t n,
                          int layer, const int32_t* slot_block, const int32_t* slot_offset,
                          const KvPoolView& pool, cudaStream_t stream);
// Attention state reset: m = -inf, l = 0, acc = 0 for `items` (row, head) pairs.
cudaError_t LaunchAttentionBegin(int64_t items, int head_dim, AttentionState st,
                                 cudaStream_t stream);
// Most chunk partials (each head_dim + 2 floats) one call may produce.
int AttentionPartialFloats(int head_dim);
// Each (row, head)'s chunks [c0, c0 + nc): max score, sum of exponentials and weighted V, into
// partials [n_rows * n_heads][nc][head_dim + 2]. Chunks past a row's keys are left unwritten.
cudaError_t LaunchAttentionPartials(const float* q, int64_t q_cols, const AttentionRow* rows,
                                    int64_t n_rows, int layer, int c0, int nc,
                                    const AttentionShape& shape, const KvPoolView& pool,
                                    float* partials, cudaStream_t stream);
// Merges those partials into the running state in chunk order (and the per-chunk statistics if
// st.chunk_max is set); adds the chunks merged per row to *chunk_count.
cudaError_t LaunchAttentionMerge(const AttentionRow* rows, int64_t n_rows, int c0, int nc,
                                 const AttentionShape& shape, int block_tokens,
                                 const float* partials, AttentionState st,
                                 unsigned long long* chunk_count, cudaStream_t stream);
// out[r, h * head_dim + i] = acc / l.
cudaError_t LaunchAttentionFinish(int64_t n_rows, const AttentionShape& shape, AttentionState st,
                                  float* out, int64_t out_cols, cudaStream_t stream);
// out = silu(gate) * up, n values.
cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t n, float* out,
                          cudaStream_t stream);
// x += y, n values.
cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream);

}  // namespace rsd::RSD_CUDA_NS
