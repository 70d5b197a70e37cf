// Fixed-chunk attention (DESIGN.md section 2): keys are walked in chunks of pool.block_tokens
// positions from position 0; each chunk's partial softmax (max, sum, weighted V) is computed in key
// order and merged into the running result in chunk order. The same chunk gives the same bits
// wherever its K/V came from, and the result does not depend on batch or thread count. K and V are
// F16 in the pool; each element is converted exactly to F32 as it is read.
//
// GCC 12's AVX-512 headers pass an uninitialized `_mm512_undefined_*` value as the unused
// pass-through operand of unmasked intrinsics (GCC bug 105593); the operand is never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/exp.h"
#include "kernels/cpu/ops.h"

namespace rsd::cpu {
namespace {

// Chunks of one (row, head) computed together before they are merged in chunk order: their sums
// run side by side in vector lanes, each lane adding its own chunk's values in key order.
constexpr int kChunkBatch = 8;
// The most query heads that share one key/value head and are computed together; a model with
// larger groups computes them in several passes.
constexpr int kMaxGroup = 8;

// Scales the chunk's n scores in place and returns their maximum as a left-to-right std::max
// gives it. The maximum is a tree of vector maxima, which is the sequential answer unless the
// scores hold a NaN or the maximum is a zero (whose sign a left-to-right walk takes from the first
// zero it meets); those take the scalar walk.
__attribute__((target("avx2"))) float ScaleMax(float* scores, float scale, int n) {
  const __m256 sv = _mm256_set1_ps(scale);
  __m256 vmax = _mm256_set1_ps(-INFINITY), unordered = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(scores + j), sv);
    _mm256_storeu_ps(scores + j, x);
    vmax = _mm256_max_ps(vmax, x);
    unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  }
  // Horizontal maximum as a tree (exact: the maximum of non-NaN values is one of them).
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
  float max = _mm_cvtss_f32(h);
  bool nan = _mm256_movemask_ps(unordered) != 0;
  for (; j < n; ++j) {
    scores[j] = scores[j] * scale;
    nan = nan || scores[j] != scores[j];
    max = std::max(max, scores[j]);
  }
  if (nan || max == 0.0f) {
    max = -INFINITY;
    for (j = 0; j < n; ++j) max = std::max(max, scores[j]);
  }
  return max;
}

// Scales the chunk's n scores in place and returns their maximum (ScaleMax's answer).
float ScaleChunk(Isa isa, float* scores, float scale, int n) {
  if (isa != Isa::kScalar) return ScaleMax(scores, scale, n);
  float max = -INFINITY;
  for (int j = 0; j < n; ++j) {
    scores[j] = scores[j] * scale;
    max = std::max(max, scores[j]);
  }
  return max;
}

// Scales the chunk's n scores in place, writes probs[j] = Exp(scores[j] - max) and returns the
// maximum.
float ScaleMaxExp(Isa isa, float* scores, float scale, float* probs, int n) {
  const float max = ScaleChunk(isa, scores, scale, n);
  ExpShifted(isa, scores, max, probs, n);
  return max;
}

// sums[i] = probs[i * stride] + probs[i * stride + 1] + ... (len values, added in that order) for
// i < count. The vector path runs the count chunks in lanes; probs[i * stride + j] for j past a
// chunk's own keys must be zero (adding +0 to a sum of non-negative values keeps its bits).
__attribute__((target("avx2"))) void ChunkSumsAvx2(const float* probs, int stride, int len,
                                                   int count, float* sums) {
  alignas(32) int32_t index[8], mask[8];
  for (int i = 0; i < 8; ++i) {
    index[i] = i < count ? i * stride : 0;
    mask[i] = i < count ? -1 : 0;
  }
  const __m256i vi = _mm256_load_si256(reinterpret_cast<const __m256i*>(index));
  const __m256 vm = _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(mask)));
  __m256 sum = _mm256_setzero_ps();
  for (int j = 0; j < len; ++j) {
    sum = _mm256_add_ps(sum, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), probs + j, vi, vm, 4));
  }
  alignas(32) float out[8];
  _mm256_store_ps(out, sum);
  for (int i = 0; i < count; ++i) sums[i] = out[i];
}

void ChunkSums(Isa isa, const float* probs, int stride, int len, int count, float* sums) {
  if (isa != Isa::kScalar) return ChunkSumsAvx2(probs, stride, len, count, sums);
  for (int i = 0; i < count; ++i) {
    float sum = 0.0f;
    for (int j = 0; j < len; ++j) sum = sum + probs[i * stride + j];
    sums[i] = sum;
  }
}

// Scratch of one thread: kChunkBatch chunks' scores and probabilities of each head of a group
// ([head][chunk][key]), and one chunk's weighted V of each head.
struct ChunkScratch {
  std::vector<float> scores, probs, acc;
};

// Requests the K and V of chunks [first, first + count) of one key/value head into L2: rows of
// different sessions sit in different blocks, and a batched step's attention otherwise waits on
// each chunk's lines as it reaches them.
void PrefetchChunks(const AttentionRow& row, int layer, int kv_head, int first, int count, int hd,
                    const KvPoolView& pool) {
  const int bt = pool.block_tokens;
  for (int i = 0; i < count; ++i) {
    const int n = std::min(bt, row.n_keys - (first + i) * bt);
    const KvElement* K = pool.K(row.block_table[first + i], layer).get() + int64_t{kv_head} * hd;
    const KvElement* V = pool.V(row.block_table[first + i], layer).get() + int64_t{kv_head} * hd;
    for (int j = 0; j < n; ++j) {
      for (int e = 0; e < hd; e += 32) {
        _mm_prefetch(reinterpret_cast<const char*>(K + j * pool.kv_dim + e), _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char*>(V + j * pool.kv_dim + e), _MM_HINT_T1);
      }
    }
  }
}

// The heads of one (row, key/value head) that one MergeChunks call computes: g consecutive query
// heads q + h * head_dim and their states m[h], l[h], acc + h * head_dim, per-chunk statistics at
// stat_max/stat_sum + h * stat_stride (null: none kept). g is 1, or the group that shares the
// key/value head: each head's arithmetic is the same either way, only K and V are read once.
struct HeadGroup {
  const float* q;
  int g;
  float *m, *l, *acc, *stat_max, *stat_sum;
  int64_t stat_stride;
};

// Merges chunks [c0, c1) of each head of `hg` into its running state (m, l, acc[hd]). The state
// starts at m = -inf, l = 0, acc = 0; the first merge then yields the chunk's own values exactly
// (Exp(-inf) = 0, Exp(0) = 1). Up to kChunkBatch chunks at a time get their scores, maxima,
// probabilities and sums (each chunk's own, in key order) before they are merged in chunk order.
void MergeChunks(const OpContext& ctx, const HeadGroup& hg, const AttentionRow& row, int layer,
                 int kv_head, int c0, int c1, const AttentionShape& shape, const KvPoolView& pool,
                 ChunkScratch& w) {
  const int hd = shape.head_dim, bt = pool.block_tokens, g = hg.g, hs = kChunkBatch * bt;
  w.scores.resize(static_cast<size_t>(g) * hs);
  w.probs.resize(w.scores.size());
  w.acc.resize(static_cast<size_t>(g) * hd);
  const int n_chunks = (row.n_keys + bt - 1) / bt;
  const int end = std::min(c1, n_chunks);
  for (int first = c0; first < end; first += kChunkBatch) {
    const int count = std::min(kChunkBatch, end - first);
    PrefetchChunks(row, layer, kv_head, first, count, hd, pool);
    float maxima[kMaxGroup][kChunkBatch], sums[kMaxGroup][kChunkBatch];
    for (int i = 0; i < count; ++i) {
      const int c = first + i, n = std::min(bt, row.n_keys - c * bt);
      const KvElement* K = pool.K(row.block_table[c], layer).get() + int64_t{kv_head} * hd;
      DotF32ManyGroup(ctx.isa, hg.q, hd, g, K, pool.kv_dim, n, hd, w.scores.data() + i * bt, hs);
      for (int h = 0; h < g; ++h) {
        float* probs = w.probs.data() + h * hs + i * bt;
        maxima[h][i] =
            ScaleMaxExp(ctx.isa, w.scores.data() + h * hs + i * bt, shape.scale, probs, n);
        std::fill(probs + n, probs + bt, 0.0f);
      }
    }
    // The merges' running maxima follow from the chunks' alone, so their rescaling factors
    // a = Exp(m - mn) and b = Exp(mc - mn) go through one vector Exp (the scalar Exp's bits)
    // instead of two dependent scalar ones per chunk.
    float shifts[kMaxGroup][2 * kChunkBatch], factors[kMaxGroup][2 * kChunkBatch];
    float running[kMaxGroup][kChunkBatch];
    for (int h = 0; h < g; ++h) {
      ChunkSums(ctx.isa, w.probs.data() + h * hs, bt, bt, count, sums[h]);
      float mi = hg.m[h];
      for (int i = 0; i < count; ++i) {
        const float mn = std::max(mi, maxima[h][i]);
        shifts[h][2 * i] = mi - mn;
        shifts[h][2 * i + 1] = maxima[h][i] - mn;
        running[h][i] = mi = mn;
      }
      ExpShifted(ctx.isa, shifts[h], 0.0f, factors[h], 2 * count);
    }
    for (int i = 0; i < count; ++i) {
      const int c = first + i, n = std::min(bt, row.n_keys - c * bt);
      const KvElement* V = pool.V(row.block_table[c], layer).get() + int64_t{kv_head} * hd;
      std::fill(w.acc.begin(), w.acc.end(), 0.0f);
      WeightedSumF32Group(ctx.isa, w.acc.data(), hd, w.probs.data() + i * bt, hs, g, V, pool.kv_dim,
                          n, hd);
      for (int h = 0; h < g; ++h) {
        const float lc = sums[h][i], a = factors[h][2 * i], b = factors[h][2 * i + 1];
        if (hg.stat_max != nullptr) {
          hg.stat_max[h * hg.stat_stride + c] = maxima[h][i];
          hg.stat_sum[h * hg.stat_stride + c] = lc;
        }
        hg.l[h] = hg.l[h] * a + lc * b;
        ScaleAddF32(ctx.isa, hg.acc + h * hd, a, w.acc.data() + h * hd, b, hd);
        hg.m[h] = running[h][i];
      }
    }
  }
}

#if RSD_RELAXED_NUMERICS
// The relaxed build's merge (used only to measure what exactness costs,
// tools/bench/exactness_cost.py): up to kChunkBatch chunks are one softmax unit — one maximum,
// one sum in any order, their values weighted into one accumulator and merged once — so the
// result depends on where the batches of chunks start, as an engine that does not fix its
// reduction order would. MergeChunks' arguments; the per-chunk statistics are not produced.
void MergeChunksRelaxed(const OpContext& ctx, const HeadGroup& hg, const AttentionRow& row,
                        int layer, int kv_head, int c0, int c1, const AttentionShape& shape,
                        const KvPoolView& pool, ChunkScratch& w) {
  const int hd = shape.head_dim, bt = pool.block_tokens, g = hg.g, hs = kChunkBatch * bt;
  w.scores.resize(static_cast<size_t>(g) * hs);
  w.probs.resize(w.scores.size());
  w.acc.resize(static_cast<size_t>(g) * hd);
  const int end = std::min(c1, (row.n_keys + bt - 1) / bt);
  for (int first = c0; first < end; first += kChunkBatch) {
    const int count = std::min(kChunkBatch, end - first);
    float bmax[kMaxGroup], sum[kMaxGroup];
    std::fill(bmax, bmax + g, -INFINITY);
    std::fill(sum, sum + g, 0.0f);
    for (int i = 0; i < count; ++i) {
      const int c = first + i, n = std::min(bt, row.n_keys - c * bt);
      const KvElement* K = pool.K(row.block_table[c], layer).get() + int64_t{kv_head} * hd;
      DotF32ManyGroup(ctx.isa, hg.q, hd, g, K, pool.kv_dim, n, hd, w.scores.data() + i * bt, hs);
      for (int h = 0; h < g; ++h) {
        float* scores = w.scores.data() + h * hs + i * bt;
        bmax[h] = std::max(bmax[h], ScaleChunk(ctx.isa, scores, shape.scale, n));
      }
    }
    std::fill(w.acc.begin(), w.acc.end(), 0.0f);
    for (int i = 0; i < count; ++i) {
      const int c = first + i, n = std::min(bt, row.n_keys - c * bt);
      for (int h = 0; h < g; ++h) {
        float* probs = w.probs.data() + h * hs + i * bt;
        ExpShifted(ctx.isa, w.scores.data() + h * hs + i * bt, bmax[h], probs, n);
        for (int j = 0; j < n; ++j) sum[h] += probs[j];
      }
      const KvElement* V = pool.V(row.block_table[c], layer).get() + int64_t{kv_head} * hd;
      WeightedSumF32Group(ctx.isa, w.acc.data(), hd, w.probs.data() + i * bt, hs, g, V, pool.kv_dim,
                          n, hd);
    }
    for (int h = 0; h < g; ++h) {
      const float mn = std::max(hg.m[h], bmax[h]);
      const float a = Exp(hg.m[h] - mn), b = Exp(bmax[h] - mn);
      hg.l[h] = hg.l[h] * a + sum[h] * b;
      ScaleAddF32(ctx.isa, hg.acc + h * hd, a, w.acc.data() + h * hd, b, hd);
      hg.m[h] = mn;
    }
  }
}
#endif

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
  // An item is one row's heads that share a key/value head, computed together (K and V read
  // once for them: measured ~1.4x the speed of its heads one by one), unless one (row, head) an
  // item spreads much better over the threads (the busiest thread's share compared, in heads).
  // Either way each head's arithmetic is the same.
  const int64_t threads = ctx.pool->size(), groups = q.rows * shape.n_kv_heads;
  const int64_t busiest_grouped = (groups + threads - 1) / threads * group;
  const int64_t busiest_alone = (q.rows * shape.n_heads + threads - 1) / threads;
  const bool grouped = group <= kMaxGroup && 5 * busiest_grouped <= 6 * busiest_alone;
  const int g = grouped ? group : 1, per_row = shape.n_heads / g;
  const int64_t items = q.rows * per_row, bt = pool.block_tokens;
  // An item's cost: its keys in the chunk range, plus a little for its fixed work. Which thread
  // computes an item does not change its bits.
  const std::vector<int64_t> cuts = BalancedCuts(items, ctx.pool->size(), [&](int64_t it) {
    const int64_t keys = std::min<int64_t>(rows[it / per_row].n_keys, chunk_end * bt);
    return static_cast<double>(std::max<int64_t>(0, keys - chunk_begin * bt) + 16);
  });
  ctx.pool->ParallelFor(ctx.pool->size(), 1, [&](int64_t pb, int64_t pe, int) {
    ChunkScratch scratch;
    for (int64_t it = cuts[pb]; it < cuts[pe]; ++it) {
      const int64_t r = it / per_row, first = it * g;  // first head's state index
      const int h = static_cast<int>(it % per_row) * g;
      HeadGroup hg{q.f32() + r * q.cols + static_cast<int64_t>(h) * hd,
                   g,
                   st.m + first,
                   st.l + first,
                   st.acc + first * hd,
                   nullptr,
                   nullptr,
                   st.chunk_stride};
      if (st.chunk_max != nullptr) {
        hg.stat_max = st.chunk_max + first * st.chunk_stride;
        hg.stat_sum = st.chunk_sum + first * st.chunk_stride;
      }
#if RSD_RELAXED_NUMERICS
      if (hg.stat_max == nullptr) {
        MergeChunksRelaxed(ctx, hg, rows[r], layer, h / group, chunk_begin, chunk_end, shape, pool,
                           scratch);
        continue;
      }
#endif
      MergeChunks(ctx, hg, rows[r], layer, h / group, chunk_begin, chunk_end, shape, pool, scratch);
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
