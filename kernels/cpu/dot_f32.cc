// GCC 12's AVX-512 headers pass an uninitialized `_mm512_undefined_*` value as the unused
// pass-through operand of some unmasked intrinsics, which -Wuninitialized reports at every use
// (GCC bug 105593); the operand is never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <array>
#include <cmath>

#include "kernels/cpu/dot.h"
#include "kernels/half.h"

namespace rsd::cpu {
namespace {

inline float FoldLanes(float* acc) {
  for (int w = 8; w >= 1; w /= 2) {
    for (int j = 0; j < w; ++j) acc[j] = acc[j] + acc[j + w];
  }
  return acc[0];
}

// An element of a row as F32: F32 itself, or an F16 (hot K/V) converted exactly.
inline float ToF32(float x) { return x; }
inline float ToF32(uint16_t h) { return half::F16ToF32(h); }

__attribute__((target("avx2,f16c"))) inline __m256 Load8(const float* p) {
  return _mm256_loadu_ps(p);
}
__attribute__((target("avx2,f16c"))) inline __m256 Load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
__attribute__((target("avx512f"))) inline __m512 Load16(const float* p) {
  return _mm512_loadu_ps(p);
}
__attribute__((target("avx512f"))) inline __m512 Load16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

template <typename E>
float DotF32Scalar(const float* a, const E* b, int64_t n) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) acc[j] = std::fma(a[i + j], ToF32(b[i + j]), acc[j]);
  }
  for (int j = 0; i < n; ++i, ++j) acc[j] = std::fma(a[i], ToF32(b[i]), acc[j]);
  return FoldLanes(acc);
}

template <typename E>
__attribute__((target("avx2,fma,f16c"))) float DotF32Avx2(const float* a, const E* b, int64_t n) {
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), Load8(b + i), lo);
    hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), Load8(b + i + 8), hi);
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
  for (int j = 0; i < n; ++i, ++j) acc[j] = std::fma(a[i], ToF32(b[i]), acc[j]);
  return FoldLanes(acc);
}

template <typename E>
__attribute__((target("avx512f"))) float DotF32Avx512(const float* a, const E* b, int64_t n) {
  __m512 v = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    v = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), Load16(b + i), v);
  }
  alignas(64) float acc[16];
  _mm512_store_ps(acc, v);
  for (int j = 0; i < n; ++i, ++j) acc[j] = std::fma(a[i], ToF32(b[i]), acc[j]);
  return FoldLanes(acc);
}

template <typename E>
float DotAny(Isa isa, const float* a, const E* b, int64_t n) {
  switch (isa) {
    case Isa::kAvx512:
    case Isa::kAvx512Vnni:
    case Isa::kAmx:
      return DotF32Avx512(a, b, n);
    case Isa::kAvx2:
      return DotF32Avx2(a, b, n);
    case Isa::kScalar:
      return DotF32Scalar(a, b, n);
  }
  return 0.0f;
}

template <typename E>
void AxpyF32Scalar(float* y, float a, const E* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::fma(a, ToF32(x[i]), y[i]);
}

void ScaleAddF32Scalar(float* y, float a, const float* x, float b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] * a + x[i] * b;
}

__attribute__((target("avx2,fma"))) void AxpyF32Avx2(float* y, float a, const float* x, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  AxpyF32Scalar(y + i, a, x + i, n - i);
}

template <typename E>
void WeightedSumF32Scalar(float* y, const float* w, const E* x, int64_t stride, int n, int64_t d) {
  for (int j = 0; j < n; ++j) AxpyF32Scalar(y, w[j], x + j * stride, d);
}

// Slabs of 32 elements in four registers, then of 8, then the scalar tail; within each, the rows
// in order: every y[i] sees y[i] + w[j] * x[j][i] for j = 0, 1, ... as AxpyF32 gives it.
template <typename E>
__attribute__((target("avx2,fma,f16c"))) void WeightedSumF32Avx2(float* y, const float* w,
                                                                 const E* x, int64_t stride, int n,
                                                                 int64_t d) {
  int64_t i = 0;
  for (; i + 32 <= d; i += 32) {
    __m256 a0 = _mm256_loadu_ps(y + i), a1 = _mm256_loadu_ps(y + i + 8);
    __m256 a2 = _mm256_loadu_ps(y + i + 16), a3 = _mm256_loadu_ps(y + i + 24);
    for (int j = 0; j < n; ++j) {
      const __m256 wj = _mm256_set1_ps(w[j]);
      const E* xr = x + j * stride + i;
      a0 = _mm256_fmadd_ps(wj, Load8(xr), a0);
      a1 = _mm256_fmadd_ps(wj, Load8(xr + 8), a1);
      a2 = _mm256_fmadd_ps(wj, Load8(xr + 16), a2);
      a3 = _mm256_fmadd_ps(wj, Load8(xr + 24), a3);
    }
    _mm256_storeu_ps(y + i, a0);
    _mm256_storeu_ps(y + i + 8, a1);
    _mm256_storeu_ps(y + i + 16, a2);
    _mm256_storeu_ps(y + i + 24, a3);
  }
  for (; i + 8 <= d; i += 8) {
    __m256 a = _mm256_loadu_ps(y + i);
    for (int j = 0; j < n; ++j) {
      a = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), Load8(x + j * stride + i), a);
    }
    _mm256_storeu_ps(y + i, a);
  }
  if (i < d) WeightedSumF32Scalar(y + i, w, x + i, stride, n, d - i);
}

// The AVX2 slabs' operations on 64-element slabs in four 512-bit registers (elementwise, so the
// same bits); what is left over goes to the AVX2 path.
template <typename E>
__attribute__((target("avx512f"))) void WeightedSumF32Avx512(float* y, const float* w, const E* x,
                                                             int64_t stride, int n, int64_t d) {
  int64_t i = 0;
  for (; i + 64 <= d; i += 64) {
    __m512 a0 = _mm512_loadu_ps(y + i), a1 = _mm512_loadu_ps(y + i + 16);
    __m512 a2 = _mm512_loadu_ps(y + i + 32), a3 = _mm512_loadu_ps(y + i + 48);
    for (int j = 0; j < n; ++j) {
      const __m512 wj = _mm512_set1_ps(w[j]);
      const E* xr = x + j * stride + i;
      a0 = _mm512_fmadd_ps(wj, Load16(xr), a0);
      a1 = _mm512_fmadd_ps(wj, Load16(xr + 16), a1);
      a2 = _mm512_fmadd_ps(wj, Load16(xr + 32), a2);
      a3 = _mm512_fmadd_ps(wj, Load16(xr + 48), a3);
    }
    _mm512_storeu_ps(y + i, a0);
    _mm512_storeu_ps(y + i + 16, a1);
    _mm512_storeu_ps(y + i + 32, a2);
    _mm512_storeu_ps(y + i + 48, a3);
  }
  if (i < d) WeightedSumF32Avx2(y + i, w, x + i, stride, n, d - i);
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

// ScaleAddF32Avx2's operations sixteen elements at a time (elementwise: the same bits).
__attribute__((target("avx512f"))) void ScaleAddF32Avx512(float* y, float a, const float* x,
                                                          float b, int64_t n) {
  const __m512 av = _mm512_set1_ps(a), bv = _mm512_set1_ps(b);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(y + i), av),
                                          _mm512_mul_ps(_mm512_loadu_ps(x + i), bv)));
  }
  ScaleAddF32Avx2(y + i, a, x + i, b, n - i);
}

// FoldLanes of 16 accumulators at once. Each step adds, for every key, its lanes l and l + w
// (w = 8, 4, 2, 1) as FoldLanes does, with two keys' vectors combined per addition; the sums end
// in lane kLaneOfKey[j] of the result. Keys beyond n hold zeros and are ignored. The steps w = 8,
// 4, 2 never combine keys 0..7 with keys 8..15, so each half folds alone (FoldEight) and the last
// step (FoldLast) joins them.
__attribute__((target("avx512f"), always_inline)) inline __m512 FoldEight(const __m512 v[8]) {
  __m512 s8[4], s4[2];
  for (int i = 0; i < 4; ++i) {  // w = 8: [a0..7 | b0..7] + [a8..15 | b8..15]
    const __m512 a = v[2 * i], b = v[2 * i + 1];
    s8[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  for (int i = 0; i < 2; ++i) {  // w = 4: 128-bit lanes 0 and 2 against 1 and 3 of each key
    const __m512 c = s8[2 * i], d = s8[2 * i + 1];
    s4[i] = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 1, 3, 1)));
  }
  // w = 2: elements 0, 1 against 2, 3 within each 128-bit lane
  return _mm512_add_ps(_mm512_shuffle_ps(s4[0], s4[1], _MM_SHUFFLE(1, 0, 1, 0)),
                       _mm512_shuffle_ps(s4[0], s4[1], _MM_SHUFFLE(3, 2, 3, 2)));
}

// w = 1: element 0 against 1 and 2 against 3, over the two halves' FoldEight results.
__attribute__((target("avx512f"), always_inline)) inline __m512 FoldLast(__m512 lo, __m512 hi) {
  return _mm512_add_ps(_mm512_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1)));
}

__attribute__((target("avx512f"), always_inline)) inline __m512 FoldSixteen(const __m512 v[16]) {
  return FoldLast(FoldEight(v), FoldEight(v + 8));
}

// Where FoldSixteen leaves key j's sum: a fold of "every lane of key j is (j + 1) / 16" puts the
// exact value j + 1 there.
__attribute__((target("avx512f"))) std::array<int, 16> LaneOfKey() {
  __m512 probe[16];
  for (int j = 0; j < 16; ++j) probe[j] = _mm512_set1_ps(static_cast<float>(j + 1) / 16.0f);
  alignas(64) float r[16];
  _mm512_store_ps(r, FoldSixteen(probe));
  std::array<int, 16> out{};
  for (int l = 0; l < 16; ++l) out[static_cast<int>(r[l]) - 1] = l;
  return out;
}

// Sixteen keys (a full chunk): the loops have fixed bounds, so the accumulators stay in registers.
template <typename E>
__attribute__((target("avx512f"), always_inline)) inline void DotSixteenAvx512(
    const float* a, const E* b, int64_t stride, int64_t d, __m512 v[16]) {
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) v[j] = _mm512_setzero_ps();
  for (int64_t i = 0; i < d; i += 16) {
    const __m512 av = _mm512_loadu_ps(a + i);
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) v[j] = _mm512_fmadd_ps(av, Load16(b + j * stride + i), v[j]);
  }
}

template <typename E>
__attribute__((target("avx512f"))) void DotF32ManyAvx512(const float* a, const E* b, int64_t stride,
                                                         int n, int64_t d, float* out) {
  static const std::array<int, 16> lane = LaneOfKey();
  __m512 v[16];
  if (n == 16) {
    DotSixteenAvx512(a, b, stride, d, v);
    const __m512 sums = FoldSixteen(v);
    const __m512i idx = _mm512_loadu_si512(lane.data());
    _mm512_storeu_ps(out, _mm512_permutexvar_ps(idx, sums));
    return;
  }
  for (int j = 0; j < 16; ++j) v[j] = _mm512_setzero_ps();
  for (int64_t i = 0; i < d; i += 16) {
    const __m512 av = _mm512_loadu_ps(a + i);
    for (int j = 0; j < n; ++j) {
      v[j] = _mm512_fmadd_ps(av, Load16(b + j * stride + i), v[j]);
    }
  }
  alignas(64) float sums[16];
  _mm512_store_ps(sums, FoldSixteen(v));
  for (int j = 0; j < n; ++j) out[j] = sums[lane[j]];
}

// DotF32ManyAvx512 of G queries (a + h * a_stride) against one full chunk of 16 keys, each key
// slice converted once for the G queries. Per query the same multiply-adds into the same lanes and
// the same fold: the same bits. Eight keys at a time keep 8 * G accumulators in registers.
template <int G, typename E>
__attribute__((target("avx512f"), always_inline)) inline void DotGroupSixteenAvx512(
    const float* a, int64_t a_stride, const E* b, int64_t stride, int64_t d, float* out,
    int64_t out_stride, __m512i lane_of_key) {
  __m512 half[2][G];
#pragma GCC unroll 2
  for (int k = 0; k < 2; ++k) {
    __m512 v[G][8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
#pragma GCC unroll 4
      for (int h = 0; h < G; ++h) v[h][j] = _mm512_setzero_ps();
    }
    for (int64_t i = 0; i < d; i += 16) {
      __m512 av[G];
#pragma GCC unroll 4
      for (int h = 0; h < G; ++h) av[h] = _mm512_loadu_ps(a + h * a_stride + i);
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        const __m512 kv = Load16(b + (8 * k + j) * stride + i);
#pragma GCC unroll 4
        for (int h = 0; h < G; ++h) v[h][j] = _mm512_fmadd_ps(av[h], kv, v[h][j]);
      }
    }
#pragma GCC unroll 4
    for (int h = 0; h < G; ++h) half[k][h] = FoldEight(v[h]);
  }
#pragma GCC unroll 4
  for (int h = 0; h < G; ++h) {
    _mm512_storeu_ps(out + h * out_stride,
                     _mm512_permutexvar_ps(lane_of_key, FoldLast(half[0][h], half[1][h])));
  }
}

template <typename E>
__attribute__((target("avx512f"))) void DotGroupAvx512(const float* a, int64_t a_stride, int g,
                                                       const E* b, int64_t stride, int64_t d,
                                                       float* out, int64_t out_stride) {
  static const std::array<int, 16> lane = LaneOfKey();
  const __m512i idx = _mm512_loadu_si512(lane.data());
  // The chunk's keys are requested at once (into L1 from where PrefetchChunks put them): the
  // first half's fold would otherwise wait on its keys before the second half's loads issue.
  for (int64_t e = 0; e < 16 * d; e += 32) {
    _mm_prefetch(reinterpret_cast<const char*>(b + e / d * stride + e % d), _MM_HINT_T0);
  }
  int h = 0;
  for (; h + 3 <= g; h += 3) {
    DotGroupSixteenAvx512<3>(a + h * a_stride, a_stride, b, stride, d, out + h * out_stride,
                             out_stride, idx);
  }
  if (g - h == 2) {
    DotGroupSixteenAvx512<2>(a + h * a_stride, a_stride, b, stride, d, out + h * out_stride,
                             out_stride, idx);
  } else if (g - h == 1) {
    DotGroupSixteenAvx512<1>(a + h * a_stride, a_stride, b, stride, d, out + h * out_stride,
                             out_stride, idx);
  }
}

template <typename E>
void DotManyAny(Isa isa, const float* a, const E* b, int64_t stride, int n, int64_t d, float* out) {
  if (isa >= Isa::kAvx512 && d % 16 == 0 && n <= 16) {
    DotF32ManyAvx512(a, b, stride, n, d, out);
    return;
  }
  for (int j = 0; j < n; ++j) out[j] = DotAny(isa, a, b + j * stride, d);
}

// WeightedSumF32Avx512 for G heads (y + h * y_stride, weights w + h * w_stride) over the same
// rows, each row's 64-element slab converted once for the G heads: per head the same operations in
// the same order, so the same bits. What is left of d goes to the AVX2 path head by head.
template <int G, typename E>
__attribute__((target("avx512f"))) void WeightedSumGroupAvx512(float* y, int64_t y_stride,
                                                               const float* w, int64_t w_stride,
                                                               const E* x, int64_t stride, int n,
                                                               int64_t d) {
  int64_t i = 0;
  for (; i + 64 <= d; i += 64) {
    __m512 acc[G][4];
#pragma GCC unroll 4
    for (int h = 0; h < G; ++h) {
#pragma GCC unroll 4
      for (int s = 0; s < 4; ++s) acc[h][s] = _mm512_loadu_ps(y + h * y_stride + i + 16 * s);
    }
    for (int j = 0; j < n; ++j) {
      const E* xr = x + j * stride + i;
      const __m512 x0 = Load16(xr), x1 = Load16(xr + 16), x2 = Load16(xr + 32),
                   x3 = Load16(xr + 48);
#pragma GCC unroll 4
      for (int h = 0; h < G; ++h) {
        const __m512 wj = _mm512_set1_ps(w[h * w_stride + j]);
        acc[h][0] = _mm512_fmadd_ps(wj, x0, acc[h][0]);
        acc[h][1] = _mm512_fmadd_ps(wj, x1, acc[h][1]);
        acc[h][2] = _mm512_fmadd_ps(wj, x2, acc[h][2]);
        acc[h][3] = _mm512_fmadd_ps(wj, x3, acc[h][3]);
      }
    }
#pragma GCC unroll 4
    for (int h = 0; h < G; ++h) {
#pragma GCC unroll 4
      for (int s = 0; s < 4; ++s) _mm512_storeu_ps(y + h * y_stride + i + 16 * s, acc[h][s]);
    }
  }
  for (int h = 0; h < G && i < d; ++h) {
    WeightedSumF32Avx2(y + h * y_stride + i, w + h * w_stride, x + i, stride, n, d - i);
  }
}

template <typename E>
void WeightedSumGroup(float* y, int64_t y_stride, const float* w, int64_t w_stride, int g,
                      const E* x, int64_t stride, int n, int64_t d) {
  int h = 0;
  for (; h + 4 <= g; h += 4) {
    WeightedSumGroupAvx512<4>(y + h * y_stride, y_stride, w + h * w_stride, w_stride, x, stride, n,
                              d);
  }
  float* yh = y + h * y_stride;
  const float* wh = w + h * w_stride;
  switch (g - h) {
    case 3:
      return WeightedSumGroupAvx512<3>(yh, y_stride, wh, w_stride, x, stride, n, d);
    case 2:
      return WeightedSumGroupAvx512<2>(yh, y_stride, wh, w_stride, x, stride, n, d);
    case 1:
      return WeightedSumGroupAvx512<1>(yh, y_stride, wh, w_stride, x, stride, n, d);
  }
}

template <typename E>
void WeightedSumAny(Isa isa, float* y, const float* w, const E* x, int64_t stride, int n,
                    int64_t d) {
  if (isa == Isa::kScalar) {
    WeightedSumF32Scalar(y, w, x, stride, n, d);
  } else if (isa >= Isa::kAvx512) {
    WeightedSumF32Avx512(y, w, x, stride, n, d);
  } else {
    WeightedSumF32Avx2(y, w, x, stride, n, d);
  }
}

__attribute__((target("avx2,f16c"))) void F32ToF16Avx2(const float* x, uint16_t* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) out[i] = half::F32ToF16(x[i]);
}

}  // namespace

float DotF32(Isa isa, const float* a, const float* b, int64_t n) { return DotAny(isa, a, b, n); }

void DotF32Many(Isa isa, const float* a, const uint16_t* b, int64_t stride, int n, int64_t d,
                float* out) {
  DotManyAny(isa, a, b, stride, n, d, out);
}

void DotF32ManyGroup(Isa isa, const float* a, int64_t a_stride, int g, const uint16_t* b,
                     int64_t stride, int n, int64_t d, float* out, int64_t out_stride) {
  if (isa >= Isa::kAvx512 && d % 16 == 0 && n == 16) {
    DotGroupAvx512(a, a_stride, g, b, stride, d, out, out_stride);
    return;
  }
  for (int h = 0; h < g; ++h)
    DotManyAny(isa, a + h * a_stride, b, stride, n, d, out + h * out_stride);
}

void AxpyF32(Isa isa, float* y, float a, const float* x, int64_t n) {
  if (isa == Isa::kScalar) {
    AxpyF32Scalar(y, a, x, n);
  } else {
    AxpyF32Avx2(y, a, x, n);  // AVX-512 machines take the AVX2 path: same bits, n is small
  }
}

void WeightedSumF32(Isa isa, float* y, const float* w, const uint16_t* x, int64_t stride, int n,
                    int64_t d) {
  WeightedSumAny(isa, y, w, x, stride, n, d);
}

void WeightedSumF32Group(Isa isa, float* y, int64_t y_stride, const float* w, int64_t w_stride,
                         int g, const uint16_t* x, int64_t stride, int n, int64_t d) {
  if (isa >= Isa::kAvx512) {
    WeightedSumGroup(y, y_stride, w, w_stride, g, x, stride, n, d);
    return;
  }
  for (int h = 0; h < g; ++h)
    WeightedSumAny(isa, y + h * y_stride, w + h * w_stride, x, stride, n, d);
}

void F32ToF16Row(Isa isa, const float* x, uint16_t* out, int64_t n) {
  if (isa == Isa::kScalar) {
    for (int64_t i = 0; i < n; ++i) out[i] = half::F32ToF16(x[i]);
  } else {
    F32ToF16Avx2(x, out, n);
  }
}

void ScaleAddF32(Isa isa, float* y, float a, const float* x, float b, int64_t n) {
  if (isa == Isa::kScalar) {
    ScaleAddF32Scalar(y, a, x, b, n);
  } else if (isa >= Isa::kAvx512) {
    ScaleAddF32Avx512(y, a, x, b, n);
  } else {
    ScaleAddF32Avx2(y, a, x, b, n);
  }
}

}  // namespace rsd::cpu
