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
  if (i == n) {
    // FoldLanes in registers: j += j+8 is lo + hi, then j += j+4, j+2, j+1 within it.
    const __m256 h = _mm256_add_ps(lo, hi);
    __m128 v = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
    return _mm_cvtss_f32(v);
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

void AxpyF32Scalar(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] + a * x[i];
}

void ScaleAddF32Scalar(float* y, float a, const float* x, float b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] * a + x[i] * b;
}

__attribute__((target("avx2"))) void AxpyF32Avx2(float* y, float a, const float* x, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(
        y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(av, _mm256_loadu_ps(x + i))));
  }
  AxpyF32Scalar(y + i, a, x + i, n - i);
}

__attribute__((target("avx2"))) void ScaleAddF32Avx2(float* y, float a, const float* x, float b,
                                                     int64_t n) {
  const __m256 av = _mm256_set1_ps(a), bv = _mm256_set1_ps(b);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(y + i), av),
                                          _mm256_mul_ps(_mm256_loadu_ps(x + i), bv)));
  }
  ScaleAddF32Scalar(y + i, a, x + i, b, n - i);
}

}  // namespace

void AxpyF32(Isa isa, float* y, float a, const float* x, int64_t n) {
  if (isa == Isa::kScalar) {
    AxpyF32Scalar(y, a, x, n);
  } else {
    AxpyF32Avx2(y, a, x, n);  // AVX-512 machines take the AVX2 path: same bits, n is small
  }
}

void ScaleAddF32(Isa isa, float* y, float a, const float* x, float b, int64_t n) {
  if (isa == Isa::kScalar) {
    ScaleAddF32Scalar(y, a, x, b, n);
  } else {
    ScaleAddF32Avx2(y, a, x, b, n);
  }
}

float DotF32(Isa isa, const float* a, const float* b, int64_t n) {
  switch (isa) {
    case Isa::kAvx512: return DotF32Avx512(a, b, n);
    case Isa::kAvx2: return DotF32Avx2(a, b, n);
    case Isa::kScalar: return DotF32Scalar(a, b, n);
  }
  return 0.0f;
}

}  // namespace rsd::cpu
