#include <immintrin.h>

#include "kernels/cpu/dot.h"

namespace rsd::cpu {
namespace {

inline float FoldLanes(float* acc) {
  for (int w = 8; w >= 1; w /= 2) {
    for (int j = 0; j < w; ++j) acc[j] = acc[j] + acc[j + w];
  }
  return acc[0];
}

float DotF32Scalar(const float* a, const float* b, int64_t n) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) acc[j] = acc[j] + a[i + j] * b[i + j];
  }
  for (int j = 0; i < n; ++i, ++j) acc[j] = acc[j] + a[i] * b[i];
  return FoldLanes(acc);
}

__attribute__((target("avx2,fma"))) float DotF32Avx2(const float* a, const float* b,
                                                      int64_t n) {
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    lo = _mm256_add_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    hi = _mm256_add_ps(hi, _mm256_mul_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8)));
  }
  alignas(32) float acc[16];
  _mm256_store_ps(acc, lo);
  _mm256_store_ps(acc + 8, hi);
  for (int j = 0; i < n; ++i, ++j) acc[j] = acc[j] + a[i] * b[i];
  return FoldLanes(acc);
}

__attribute__((target("avx512f"))) float DotF32Avx512(const float* a, const float* b,
                                                       int64_t n) {
  __m512 v = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
  }
  alignas(64) float acc[16];
  _mm512_store_ps(acc, v);
  for (int j = 0; i < n; ++i, ++j) acc[j] = acc[j] + a[i] * b[i];
  return FoldLanes(acc);
}

}  // namespace

float DotF32(Isa isa, const float* a, const float* b, int64_t n) {
  switch (isa) {
    case Isa::kAvx512: return DotF32Avx512(a, b, n);
    case Isa::kAvx2: return DotF32Avx2(a, b, n);
    case Isa::kScalar: return DotF32Scalar(a, b, n);
  }
  return 0.0f;
}

}  // namespace rsd::cpu
