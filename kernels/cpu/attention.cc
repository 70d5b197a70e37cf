// Fixed-chunk attention (DESIGN.md section 2): keys are walked in chunks of pool.block_tokens
// positions from position 0; each chunk's partial softmax (max, sum, weighted V) is computed in key
// order and merged into the running result in chunk order. The same chunk gives the same bits
// wherever its K/V came from, and the result does not depend on batch or thread count. K and V are
// F16 in the pool; each element is converted exactly to F32 as it is read.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/exp.h"
#include "kernels/cpu/ops.h"

namespace rsd::cpu {
namespace {

struct ChunkSoftmax {
  float max = -INFINITY;  // of the scaled scores, as a left-to-right std::max gives it
  float sum = 0.0f;       // of Exp(score - max), added in key order
};

// Scales the chunk's n scores in place, finds their maximum, writes probs[j] = Exp(scores[j] -
// max) and sums them in key order: the scalar loop's bits. The maximum is a tree of vector maxima,
// which is the sequential answer unless the scores hold a NaN or the maximum is a zero (whose sign
// a left-to-right walk takes from the first zero it meets); those take the scalar walk.
__attribute__((target("avx2"))) ChunkSoftmax SoftmaxChunkAvx2(float* scores, float scale,
                                                              float* probs, int n) {
  const __m256 sv = _mm256_set1_ps(scale);
  __m256 vmax = _mm256_set1_ps(-INFINITY), unordered = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(scores + j), sv);
    _mm256_storeu_ps(scores + j, x);
    vmax = _mm256_max_ps(vmax, x);
    unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  ChunkSoftmax out;
  for (float v : lanes) out.max = std::max(out.max, v);
  bool nan = _mm256_movemask_ps(unordered) != 0;
  for (; j < n; ++j) {
    scores[j] = scores[j] * scale;
    nan = nan || scores[j] != scores[j];
    out.max = std::max(out.max, scores[j]);
  }
  if (nan || out.max == 0.0f) {
    out.max = -INFINITY;
    for (j = 0; j < n; ++j) out.max = std::max(out.max, scores[j]);
  }
  const __m256 m = _mm256_set1_ps(out.max);
  for (j = 0; j + 8 <= n; j += 8) {
    _mm256_storeu_ps(probs + j, Exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + j), m)));
  }
  for (; j < n; ++j) probs[j] = Exp(scores[j] - out.max);
  float sum = 0.0f;
  for (j = 0; j < n; ++j) sum = sum + probs[j];
  out.sum = sum;
  return out;
}

ChunkSoftmax SoftmaxChunk(Isa isa, float* scores, float scale, float* probs, int n) {
  if (isa != Isa::kScalar) return SoftmaxChunkAvx2(scores, scale, probs, n);
  ChunkSoftmax out;
  for (int j = 0; j < n; ++j) {
    scores[j] = scores[j] * scale;
    out.max = std::max(out.max, scores[j]);
  }
  for (int j = 0; j < n; ++j) probs[j] = Exp(scores[j] - out.max);
  for (int j = 0; j < n; ++j) out.sum = out.sum + probs[j];
  return out;
}

// Merges chunks [c0, c1) of one (row, head) into its running state (m, l, acc[hd]). The state
// starts at m = -inf, l = 0, acc = 0; the first merge then yields the chunk's own values exactly
// (Exp(-inf) = 0, Exp(0) = 1).
void MergeChunks(const OpContext& ctx, const float* q, const AttentionRow& row, int layer,
                 int kv_head, int c0, int c1, const AttentionShape& shape, const KvPoolView& pool,
                 float* m, float* l, float* acc, float* stat_max, float* stat_sum,
                 std::vector<float>& scores, std::vector<float>& chunk_acc) {
  const int hd = shape.head_dim, bt = pool.block_tokens;
  scores.resize(2 * static_cast<size_t>(bt));
  float* probs = scores.data() + bt;  // Exp(score - chunk max)
  chunk_acc.resize(hd);
  const int n_chunks = (row.n_keys + bt - 1) / bt;
  for (int c = c0; c < std::min(c1, n_chunks); ++c) {
    const int n = std::min(bt, row.n_keys - c * bt);
    const int32_t block = row.block_table[c];
    const KvElement* K = pool.K(block, layer).get() + static_cast<int64_t>(kv_head) * hd;
    const KvElement* V = pool.V(block, layer).get() + static_cast<int64_t>(kv_head) * hd;
    DotF32Many(ctx.isa, q, K, pool.kv_dim, n, hd, scores.data());
    const ChunkSoftmax sm = SoftmaxChunk(ctx.isa, scores.data(), shape.scale, probs, n);
    const float mc = sm.max, lc = sm.sum;
    std::fill(chunk_acc.begin(), chunk_acc.end(), 0.0f);
    WeightedSumF32(ctx.isa, chunk_acc.data(), probs, V, pool.kv_dim, n, hd);
    if (stat_max != nullptr) {
      stat_max[c] = mc;
      stat_sum[c] = lc;
    }
    const float mn = std::max(*m, mc);
    const float a = Exp(*m - mn), b = Exp(mc - mn);
    *l = *l * a + lc * b;
    ScaleAddF32(ctx.isa, acc, a, chunk_acc.data(), b, hd);
    *m = mn;
  }
}

}  // namespace

void AttentionBeginOp(OpContext& ctx, const AttentionShape& shape, int64_t n_rows,
                      AttentionState st) {
  const int64_t items = n_rows * shape.n_heads;
  std::fill(st.m, st.m + items, -INFINITY);
  std::fill(st.l, st.l + items, 0.0f);
  std::fill(st.acc, st.acc + items * shape.head_dim, 0.0f);
}

// Cuts items [0, n) into `parts` contiguous ranges of about equal cost (cuts[0] = 0, cuts[parts]
// = n). Rows differ in their key counts (a prompt chunk's first rows see few keys, its last many;
// sessions in one step differ in context), so equal item counts leave one thread waiting.
template <class Cost>
std::vector<int64_t> BalancedCuts(int64_t n, int parts, Cost cost) {
  std::vector<int64_t> cuts(static_cast<size_t>(parts) + 1, n);
  cuts[0] = 0;
  double total = 0.0, acc = 0.0;
  for (int64_t i = 0; i < n; ++i) total += cost(i);
  int p = 1;
  for (int64_t i = 0; i < n && p < parts; ++i) {
    acc += cost(i);
    while (p < parts && acc >= total * p / parts) cuts[p++] = i + 1;
  }
  return cuts;
}

void AttentionChunksOp(OpContext& ctx, const Tensor& q, const AttentionRow* rows, int layer,
                       int chunk_begin, int chunk_end, const AttentionShape& shape,
                       const KvPoolView& pool, AttentionState st) {
  const int group = shape.n_heads / shape.n_kv_heads, hd = shape.head_dim;
  const int64_t items = q.rows * shape.n_heads, bt = pool.block_tokens;
  // An item's cost: its keys in the chunk range, plus a little for its fixed work. Which thread
  // computes an item does not change its bits.
  const std::vector<int64_t> cuts = BalancedCuts(items, ctx.pool->size(), [&](int64_t it) {
    const int64_t keys = std::min<int64_t>(rows[it / shape.n_heads].n_keys, chunk_end * bt);
    return static_cast<double>(std::max<int64_t>(0, keys - chunk_begin * bt) + 16);
  });
  ctx.pool->ParallelFor(ctx.pool->size(), 1, [&](int64_t pb, int64_t pe, int) {
    std::vector<float> scores, chunk_acc;
    for (int64_t it = cuts[pb]; it < cuts[pe]; ++it) {
      const int64_t r = it / shape.n_heads;
      const int h = static_cast<int>(it % shape.n_heads);
      const float* qh = q.f32() + r * q.cols + static_cast<int64_t>(h) * hd;
      float* smax = st.chunk_max ? st.chunk_max + it * st.chunk_stride : nullptr;
      float* ssum = st.chunk_sum ? st.chunk_sum + it * st.chunk_stride : nullptr;
      MergeChunks(ctx, qh, rows[r], layer, h / group, chunk_begin, chunk_end, shape, pool,
                  st.m + it, st.l + it, st.acc + it * hd, smax, ssum, scores, chunk_acc);
    }
  });
  int used = 0;  // threads that computed an item
  for (size_t p = 0; p + 1 < cuts.size(); ++p) used += cuts[p] < cuts[p + 1] ? 1 : 0;
  ctx.NoteThreads(used);
  for (int64_t r = 0; r < q.rows; ++r) {
    const int n_chunks = (rows[r].n_keys + pool.block_tokens - 1) / pool.block_tokens;
    const int hi = std::min(chunk_end, n_chunks);
    if (hi > chunk_begin) ctx.counters->attention_chunks += hi - chunk_begin;
  }
}

void AttentionFinishOp(OpContext& ctx, const AttentionShape& shape, int64_t n_rows,
                       AttentionState st, Tensor out) {
  const int hd = shape.head_dim;
  for (int64_t it = 0; it < n_rows * shape.n_heads; ++it) {
    const int64_t r = it / shape.n_heads;
    const int h = static_cast<int>(it % shape.n_heads);
    float* o = out.f32() + r * out.cols + static_cast<int64_t>(h) * hd;
    for (int i = 0; i < hd; ++i) o[i] = st.acc[it * hd + i] / st.l[it];
  }
  ctx.counters->attention_rows += n_rows;
}

void AttentionOp(OpContext& ctx, const Tensor& q, const AttentionRow* rows, int layer,
                 const AttentionShape& shape, const KvPoolView& pool, Tensor out) {
  const int64_t items = q.rows * shape.n_heads;
  std::vector<float> m(items), l(items), acc(items * shape.head_dim);
  AttentionState st{m.data(), l.data(), acc.data()};
  int max_chunks = 0;
  for (int64_t r = 0; r < q.rows; ++r) {
    max_chunks = std::max(max_chunks, (rows[r].n_keys + pool.block_tokens - 1) / pool.block_tokens);
  }
  AttentionBeginOp(ctx, shape, q.rows, st);
  AttentionChunksOp(ctx, q, rows, layer, 0, max_chunks, shape, pool, st);
  AttentionFinishOp(ctx, shape, q.rows, st, out);
}

}  // namespace rsd::cpu
