// CPU implementations of the backend ops, one op per file. Each takes the thread pool and ISA path;
// shapes as in kernels/backend.h.
#pragma once

#include "kernels/backend.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/thread_pool.h"

namespace rsd::cpu {

struct OpContext {
  ThreadPool* pool;
  Isa isa;
  BackendCounters* counters;
  void NoteThreads(int used) {
    if (used > counters->max_threads_used) counters->max_threads_used = used;
  }
};

// Dequantizes `cols` values of one row of any dtype to f32.
void DequantizeRow(DType t, const uint8_t* row, int64_t cols, float* out);

void EmbedOp(OpContext& ctx, const Tensor& table, const int32_t* ids, Tensor out);
void RmsNormOp(OpContext& ctx, const Tensor& x, const float* w, float eps, Tensor out);
void MatMulOp(OpContext& ctx, const Tensor& x, const Tensor& w, const float* bias, Tensor out);
void MatMulSharedOp(OpContext& ctx, const Tensor& x,
                    std::span<const Backend::MatMulTarget> targets);
void RopeOp(OpContext& ctx, Tensor x, int n_heads, int head_dim, const int32_t* pos,
            const RopeTable& table);
void StoreKvOp(OpContext& ctx, const Tensor& k, const Tensor& v, int layer,
               const int32_t* slot_block, const int32_t* slot_offset, const KvPoolView& pool);
void AttentionOp(OpContext& ctx, const Tensor& q, const AttentionRow* rows, int layer,
                 const AttentionShape& shape, const KvPoolView& pool, Tensor out);
void AttentionBeginOp(OpContext& ctx, const AttentionShape& shape, int64_t n_rows,
                      AttentionState state);
void AttentionChunksOp(OpContext& ctx, const Tensor& q, const AttentionRow* rows, int layer,
                       int chunk_begin, int chunk_end, const AttentionShape& shape,
                       const KvPoolView& pool, AttentionState state);
void AttentionFinishOp(OpContext& ctx, const AttentionShape& shape, int64_t n_rows,
                       AttentionState state, Tensor out);
void SiluMulOp(OpContext& ctx, const Tensor& gate, const Tensor& up, Tensor out);
void AddOp(OpContext& ctx, Tensor x, const Tensor& y);

}  // namespace rsd::cpu
