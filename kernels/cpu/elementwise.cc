// GCC bug 105593 (as in dot_f32.cc): unused pass-through operands of AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/exp.h"
#include "kernels/cpu/ops.h"

namespace rsd::cpu {
namespace {

__attribute__((target("avx2"))) void SiluMulAvx2(const float* g, const float* u, float* o,
                                                 int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256 silu = _mm256_div_ps(x, _mm256_add_ps(one, Exp8(_mm256_xor_ps(x, sign))));
    _mm256_storeu_ps(o + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) o[i] = Silu(g[i]) * u[i];
}

// probs[j] = Exp(scores[j] - max) for j < n, 16 (Exp16) or 8 (Exp8) at a time: the same bits.
__attribute__((target("avx512f"))) void ExpShiftedAvx512(const float* scores, float max,
                                                         float* probs, int64_t n) {
  const __m512 m = _mm512_set1_ps(max);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    _mm512_storeu_ps(probs + j, Exp16(_mm512_sub_ps(_mm512_loadu_ps(scores + j), m)));
  }
  for (; j + 8 <= n; j += 8) {
    _mm256_storeu_ps(probs + j,
                     Exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + j), _mm512_castps512_ps256(m))));
  }
  for (; j < n; ++j) probs[j] = Exp(scores[j] - max);
}

__attribute__((target("avx2"))) void ExpShiftedAvx2(const float* scores, float max, float* probs,
                                                    int64_t n) {
  const __m256 m = _mm256_set1_ps(max);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    _mm256_storeu_ps(probs + j, Exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + j), m)));
  }
  for (; j < n; ++j) probs[j] = Exp(scores[j] - max);
}

}  // namespace

void ExpShifted(Isa isa, const float* scores, float max, float* probs, int64_t n) {
  if (isa >= Isa::kAvx512) return ExpShiftedAvx512(scores, max, probs, n);
  if (isa != Isa::kScalar) return ExpShiftedAvx2(scores, max, probs, n);
  for (int64_t j = 0; j < n; ++j) probs[j] = Exp(scores[j] - max);
}

// Elements per thread's share of an elementwise op (a multiple of 8): below two of these the op
// runs on the caller alone, where a hand-off would cost more than it saves. Which thread computes
// an element does not change its bits.
constexpr int64_t kElementGrain = 4096;

void SiluMulOp(OpContext& ctx, const Tensor& gate, const Tensor& up, Tensor out) {
  const float* g = gate.f32();
  const float* u = up.f32();
  float* o = out.f32();
  const bool vector = ctx.isa != Isa::kScalar;
  const int used =
      ctx.pool->ParallelFor(gate.rows * gate.cols, kElementGrain, [&](int64_t b, int64_t e, int) {
        if (vector) return SiluMulAvx2(g + b, u + b, o + b, e - b);
        for (int64_t i = b; i < e; ++i) o[i] = Silu(g[i]) * u[i];
      });
  ctx.NoteThreads(used);
}

void AddOp(OpContext& ctx, Tensor x, const Tensor& y) {
  float* a = x.f32();
  const float* b = y.f32();
  const int used =
      ctx.pool->ParallelFor(x.rows * x.cols, kElementGrain, [&](int64_t lo, int64_t hi, int) {
        for (int64_t i = lo; i < hi; ++i) a[i] = a[i] + b[i];
      });
  ctx.NoteThreads(used);
}

void StoreKvOp(OpContext& ctx, const Tensor& k, const Tensor& v, int layer,
               const int32_t* slot_block, const int32_t* slot_offset, const KvPoolView& pool) {
  for (int64_t r = 0; r < k.rows; ++r) {
    const size_t off = static_cast<size_t>(slot_offset[r]) * pool.kv_dim;
    F32ToF16Row(ctx.isa, k.f32() + r * k.cols, pool.K(slot_block[r], layer).get() + off,
                pool.kv_dim);
    F32ToF16Row(ctx.isa, v.f32() + r * v.cols, pool.V(slot_block[r], layer).get() + off,
                pool.kv_dim);
  }
}

}  // namespace rsd::cpu
