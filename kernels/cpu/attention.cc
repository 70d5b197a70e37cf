// Fixed-chunk attention (DESIGN.md section 2): keys are walked in chunks of pool.block_tokens
// positions from position 0; each chunk's partial softmax (max, sum, weighted V) is computed in key
// order and merged into the running result in chunk order. The same chunk gives the same bits
// wherever its K/V came from, and the result does not depend on batch or thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/exp.h"
#include "kernels/cpu/ops.h"

namespace rsd::cpu {
namespace {

struct HeadScratch {
  std::vector<float> scores, acc, chunk_acc;
};

void AttendHead(const OpContext& ctx, const float* q, const AttentionRow& row, int layer,
                int kv_head, const AttentionShape& shape, const KvPoolView& pool, float* out,
                HeadScratch& s) {
  const int hd = shape.head_dim, bt = pool.block_tokens;
  s.scores.resize(bt);
  s.acc.assign(hd, 0.0f);
  s.chunk_acc.resize(hd);
  float m = 0.0f, l = 0.0f;
  const int n_chunks = (row.n_keys + bt - 1) / bt;
  for (int c = 0; c < n_chunks; ++c) {
    const int n = std::min(bt, row.n_keys - c * bt);
    const int32_t block = row.block_table[c];
    const float* K = pool.K(block, layer) + static_cast<int64_t>(kv_head) * hd;
    const float* V = pool.V(block, layer) + static_cast<int64_t>(kv_head) * hd;
    float mc = -INFINITY;
    for (int j = 0; j < n; ++j) {
      s.scores[j] = DotF32(ctx.isa, q, K + static_cast<int64_t>(j) * pool.kv_dim, hd) * shape.scale;
      mc = std::max(mc, s.scores[j]);
    }
    float lc = 0.0f;
    std::fill(s.chunk_acc.begin(), s.chunk_acc.end(), 0.0f);
    for (int j = 0; j < n; ++j) {
      const float p = Exp(s.scores[j] - mc);
      lc = lc + p;
      const float* v = V + static_cast<int64_t>(j) * pool.kv_dim;
      for (int i = 0; i < hd; ++i) s.chunk_acc[i] = s.chunk_acc[i] + p * v[i];
    }
    if (c == 0) {
      m = mc;
      l = lc;
      std::copy(s.chunk_acc.begin(), s.chunk_acc.end(), s.acc.begin());
    } else {
      const float mn = std::max(m, mc);
      const float a = Exp(m - mn), b = Exp(mc - mn);
      l = l * a + lc * b;
      for (int i = 0; i < hd; ++i) s.acc[i] = s.acc[i] * a + s.chunk_acc[i] * b;
      m = mn;
    }
  }
  for (int i = 0; i < hd; ++i) out[i] = s.acc[i] / l;
}

}  // namespace

void AttentionOp(OpContext& ctx, const Tensor& q, const AttentionRow* rows, int layer,
                 const AttentionShape& shape, const KvPoolView& pool, Tensor out) {
  const int group = shape.n_heads / shape.n_kv_heads;
  const int64_t items = q.rows * shape.n_heads;
  int used = ctx.pool->ParallelFor(items, 1, [&](int64_t b, int64_t e, int) {
    HeadScratch s;
    for (int64_t it = b; it < e; ++it) {
      const int64_t r = it / shape.n_heads;
      const int h = static_cast<int>(it % shape.n_heads);
      const float* qh = q.f32() + r * q.cols + static_cast<int64_t>(h) * shape.head_dim;
      float* oh = out.f32() + r * out.cols + static_cast<int64_t>(h) * shape.head_dim;
      AttendHead(ctx, qh, rows[r], layer, h / group, shape, pool, oh, s);
    }
  });
  ctx.NoteThreads(used);
  ctx.counters->attention_rows += q.rows;
  for (int64_t r = 0; r < q.rows; ++r) {
    ctx.counters->attention_chunks += (rows[r].n_keys + pool.block_tokens - 1) / pool.block_tokens;
  }
}

}  // namespace rsd::cpu
