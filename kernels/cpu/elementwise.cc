#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/exp.h"
#include "kernels/cpu/ops.h"

namespace rsd::cpu {
namespace {

// Exp of eight values with exactly the scalar Exp's operations (exp.h): the same products and
// sums in the same order, nearbyint as round-to-nearest-even, the same range cut-offs.
__attribute__((target("avx2"))) inline __m256 Exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3f), hi = _mm256_set1_ps(88.0f);
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);  // keeps the exponent bits valid
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 r = _mm256_sub_ps(_mm256_sub_ps(xc, _mm256_mul_ps(n, _mm256_set1_ps(0.693145751953125f))),
                                 _mm256_mul_ps(n, _mm256_set1_ps(1.428606765330187e-06f)));
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(0.5f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  // x > 88: +inf; not (x >= -87.3): 0, or x itself when x is NaN.
  e = _mm256_blendv_ps(e, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
  const __m256 below = _mm256_blendv_ps(_mm256_setzero_ps(), x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  return _mm256_blendv_ps(below, e, _mm256_cmp_ps(x, lo, _CMP_GE_OQ));
}

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

}  // namespace

void SiluMulOp(OpContext& ctx, const Tensor& gate, const Tensor& up, Tensor out) {
  const int64_t n = gate.rows * gate.cols;
  const float* g = gate.f32();
  const float* u = up.f32();
  float* o = out.f32();
  if (ctx.isa != Isa::kScalar) {
    SiluMulAvx2(g, u, o, n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) o[i] = Silu(g[i]) * u[i];
}

void AddOp(OpContext& ctx, Tensor x, const Tensor& y) {
  const int64_t n = x.rows * x.cols;
  float* a = x.f32();
  const float* b = y.f32();
  for (int64_t i = 0; i < n; ++i) a[i] = a[i] + b[i];
}

void StoreKvOp(OpContext& ctx, const Tensor& k, const Tensor& v, int layer,
               const int32_t* slot_block, const int32_t* slot_offset, const KvPoolView& pool) {
  const size_t row = static_cast<size_t>(pool.kv_dim) * sizeof(float);
  for (int64_t r = 0; r < k.rows; ++r) {
    const size_t off = static_cast<size_t>(slot_offset[r]) * pool.kv_dim;
    std::memcpy(pool.K(slot_block[r], layer) + off, k.f32() + r * k.cols, row);
    std::memcpy(pool.V(slot_block[r], layer) + off, v.f32() + r * v.cols, row);
  }
}

}  // namespace rsd::cpu
