// out = x · w^T (+ bias). Parallel over output features: each output element is one dot product
// computed by one thread with the path's fixed order, so neither the number of activation rows nor
// the thread count changes any bit (DESIGN.md section 2).
#include <algorithm>
#include <optional>
#include <span>
#include <vector>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/packed_weights.h"

namespace rsd::cpu {
namespace {

bool IsQuantized(DType t) {
  return t == DType::kQ8_0 || t == DType::kQ4_0 || t == DType::kQ4_1;
}

// Output features per scheduling unit: keeps a thread's weight rows contiguous.
constexpr int64_t kGrain = 16;

// The activation rows quantized once per matmul (or once for every weight of MatMulShared), rows
// spread over the pool's threads (each row's bits depend on that row alone): Q8Row views into the
// storage here.
struct QuantizedRows {
  std::vector<int8_t> q;
  std::vector<float> d, sd;
  std::vector<int32_t> s;
  std::vector<Q8Row> rows;

  QuantizedRows(OpContext& ctx, const Tensor& x) {
    const int64_t n = x.rows, k = x.cols, nb = k / kQBlock;
    q.resize(static_cast<size_t>(n * k));
    d.resize(static_cast<size_t>(n * nb));
    s.resize(d.size());
    sd.resize(d.size());
    rows.resize(static_cast<size_t>(n));
    ctx.pool->ParallelFor(n, 4, [&](int64_t b, int64_t e, int) {
      for (int64_t r = b; r < e; ++r) {
        QuantizeQ8Row(ctx.isa, x.f32() + r * k, k, q.data() + r * k, d.data() + r * nb,
                      s.data() + r * nb, sd.data() + r * nb);
        rows[r] = Q8Row{q.data() + r * k, d.data() + r * nb, s.data() + r * nb, sd.data() + r * nb};
      }
    });
  }
};

// Weight rows [first, m) of row-major bytes, one at a time against every activation row.
void RowMajorRows(OpContext& ctx, const QuantizedRows& a, int64_t first, const Tensor& w,
                  const float* bias, Tensor out) {
  const int64_t n = static_cast<int64_t>(a.rows.size()), m = w.rows, nb = w.cols / kQBlock;
  const size_t wrow = w.row_bytes();
  const uint8_t* wbase = static_cast<const uint8_t*>(w.data);
  int used = ctx.pool->ParallelFor(m - first, kGrain, [&](int64_t b, int64_t e, int) {
    std::vector<float> col(static_cast<size_t>(n));
    for (int64_t o = first + b; o < first + e; ++o) {
      QuantDotRows(ctx.isa, w.dtype, wbase + wrow * o, a.rows.data(), n, nb, col.data());
      for (int64_t r = 0; r < n; ++r) {
        out.f32()[r * m + o] = bias != nullptr ? col[r] + bias[o] : col[r];
      }
    }
  });
  ctx.NoteThreads(used);
}

// Weights in the VNNI path's packed layout: groups of 16 rows, then any rows past the last group
// in row-major form (packed_weights.h); the activation rows are QuantizedRows', k bytes apart.
void PackedRows(OpContext& ctx, const QuantizedRows& a, const Tensor& w, const float* bias,
                Tensor out) {
  const int64_t n = static_cast<int64_t>(a.rows.size()), m = w.rows, nb = w.cols / kQBlock;
  const int64_t groups = m / kPackRows;
  const size_t group_bytes = w.row_bytes() * kPackRows;
  const uint8_t* wbase = static_cast<const uint8_t*>(w.data);
  // The AMX kernel takes tiles of 16 activation rows and gives the rest to the VNNI kernel.
  const bool amx = ctx.isa == Isa::kAmx;
  int used = ctx.pool->ParallelFor(groups, 1, [&](int64_t b, int64_t e, int) {
    for (int64_t g = b; g < e; ++g) {
      const float* gbias = bias != nullptr ? bias + g * kPackRows : nullptr;
      const uint8_t* next = g + 1 < e ? wbase + (g + 1) * group_bytes : nullptr;
      if (amx) {
        PackedGroupDotsAmx(w.dtype, wbase + g * group_bytes, nb, a.rows.data(), n, w.cols, gbias,
                           out.f32() + g * kPackRows, m, next);
      } else {
        PackedGroupDotsVnni(w.dtype, wbase + g * group_bytes, nb, a.rows.data(), n, gbias,
                            out.f32() + g * kPackRows, m, next);
      }
    }
  });
  ctx.NoteThreads(used);
  if (groups * kPackRows < m) RowMajorRows(ctx, a, groups * kPackRows, w, bias, out);
}

void MatMulQuant(OpContext& ctx, const QuantizedRows& a, const Tensor& w, const float* bias,
                 Tensor out) {
  if (w.layout == WeightLayout::kPacked16) {
    PackedRows(ctx, a, w, bias, out);
  } else {
    RowMajorRows(ctx, a, 0, w, bias, out);
  }
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

void CountMatMul(OpContext& ctx, const Tensor& x) {
  BackendCounters& c = *ctx.counters;
  c.matmul_calls++;
  c.matmul_rows += static_cast<uint64_t>(x.rows);
  c.matmul_max_rows = std::max<uint64_t>(c.matmul_max_rows, x.rows);
  c.matmul_min_rows = std::min<uint64_t>(c.matmul_min_rows, x.rows);
}

}  // namespace

void MatMulOp(OpContext& ctx, const Tensor& x, const Tensor& w, const float* bias, Tensor out) {
  const Backend::MatMulTarget t{&w, bias, out};
  MatMulSharedOp(ctx, x, std::span<const Backend::MatMulTarget>(&t, 1));
}

void MatMulSharedOp(OpContext& ctx, const Tensor& x,
                    std::span<const Backend::MatMulTarget> targets) {
  std::optional<QuantizedRows> a;  // quantized when the first quantized weight needs it
  for (const Backend::MatMulTarget& t : targets) {
    CountMatMul(ctx, x);
    if (IsQuantized(t.w->dtype)) {
      if (!a) a.emplace(ctx, x);
      MatMulQuant(ctx, *a, *t.w, t.bias, t.out);
    } else {
      MatMulFloat(ctx, x, *t.w, t.bias, t.out);
    }
  }
}

}  // namespace rsd::cpu
