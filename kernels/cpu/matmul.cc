// out = x · w^T (+ bias). Parallel over output features: each output element is one dot product
// computed by one thread with the path's fixed order, so neither the number of activation rows nor
// the thread count changes any bit (DESIGN.md section 2).
#include <algorithm>
#include <vector>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/ops.h"

namespace rsd::cpu {
namespace {

bool IsQuantized(DType t) {
  return t == DType::kQ8_0 || t == DType::kQ4_0 || t == DType::kQ4_1;
}

// Output features per scheduling unit: keeps a thread's weight rows contiguous.
constexpr int64_t kGrain = 16;

void MatMulQuant(OpContext& ctx, const Tensor& x, const Tensor& w, const float* bias, Tensor out) {
  const int64_t n = x.rows, k = x.cols, m = w.rows, nb = k / kQBlock;
  std::vector<int8_t> q(static_cast<size_t>(n * k));
  std::vector<float> d(static_cast<size_t>(n * nb));
  std::vector<int32_t> s(static_cast<size_t>(n * nb));
  std::vector<float> sd(static_cast<size_t>(n * nb));
  for (int64_t r = 0; r < n; ++r) {
    QuantizeQ8Row(ctx.isa, x.f32() + r * k, k, q.data() + r * k, d.data() + r * nb,
                  s.data() + r * nb, sd.data() + r * nb);
  }
  const size_t wrow = w.row_bytes();
  const uint8_t* wbase = static_cast<const uint8_t*>(w.data);
  std::vector<Q8Row> rows(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    rows[r] = Q8Row{q.data() + r * k, d.data() + r * nb, s.data() + r * nb, sd.data() + r * nb};
  }
  // The VNNI path's rearranged rows, once for every weight row (only it reads them); the storage
  // is kept per calling thread so a step's matmuls do not allocate it again. The pool's threads
  // read the caller's copy through `prep` (a thread_local named inside the lambda would be each
  // worker's own, empty one, which made every worker prepare the rows again per weight row).
  thread_local Q8Prepared prepared;
  const Q8Prepared* prep = nullptr;
  if (ctx.isa == Isa::kAvx512Vnni && n > 1) {
    PrepareQ8Rows(rows.data(), n, nb, &prepared);
    prep = &prepared;
  }
  int used = ctx.pool->ParallelFor(m, kGrain, [&](int64_t b, int64_t e, int) {
    std::vector<float> col(static_cast<size_t>(n));
    for (int64_t o = b; o < e; ++o) {
      QuantDotRows(ctx.isa, w.dtype, wbase + wrow * o, rows.data(), n, nb, col.data(), prep);
      for (int64_t r = 0; r < n; ++r) {
        out.f32()[r * m + o] = bias != nullptr ? col[r] + bias[o] : col[r];
      }
    }
  });
  ctx.NoteThreads(used);
}

void MatMulFloat(OpContext& ctx, const Tensor& x, const Tensor& w, const float* bias, Tensor out) {
  const int64_t n = x.rows, k = x.cols, m = w.rows;
  const size_t wrow = w.row_bytes();
  const uint8_t* wbase = static_cast<const uint8_t*>(w.data);
  int used = ctx.pool->ParallelFor(m, kGrain, [&](int64_t b, int64_t e, int) {
    std::vector<float> conv(w.dtype == DType::kF32 ? 0 : static_cast<size_t>(k));
    for (int64_t o = b; o < e; ++o) {
      const float* wr;
      if (w.dtype == DType::kF32) {
        wr = reinterpret_cast<const float*>(wbase + wrow * o);
      } else {
        DequantizeRow(w.dtype, wbase + wrow * o, k, conv.data());
        wr = conv.data();
      }
      for (int64_t r = 0; r < n; ++r) {
        float v = DotF32(ctx.isa, x.f32() + r * k, wr, k);
        if (bias != nullptr) v = v + bias[o];
        out.f32()[r * m + o] = v;
      }
    }
  });
  ctx.NoteThreads(used);
}

}  // namespace

void MatMulOp(OpContext& ctx, const Tensor& x, const Tensor& w, const float* bias, Tensor out) {
  BackendCounters& c = *ctx.counters;
  c.matmul_calls++;
  c.matmul_rows += static_cast<uint64_t>(x.rows);
  c.matmul_max_rows = std::max<uint64_t>(c.matmul_max_rows, x.rows);
  c.matmul_min_rows = std::min<uint64_t>(c.matmul_min_rows, x.rows);
  if (IsQuantized(w.dtype)) {
    MatMulQuant(ctx, x, w, bias, out);
  } else {
    MatMulFloat(ctx, x, w, bias, out);
  }
}

}  // namespace rsd::cpu
