// What the VNNI and AMX kernels over packed weights (packed_weights.h) share: the float steps that
// follow the exact integer block sums, written once so both give the same bits by construction.
// Internal to matmul_packed_vnni.cc and matmul_packed_amx.cc (AVX-512 only).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/dot.h"

namespace rsd::cpu {

#define RSD_PACKED_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c,fma")))

// acc + x * y, the block step of every path: the product rounded, then the sum (the numerics'
// fixed order). A build with RSD_RELAXED_NUMERICS (used only to measure what exactness costs,
// tools/bench/exactness_cost.py) fuses them.
RSD_PACKED_AVX512 inline __attribute__((always_inline)) __m512 MulAdd(__m512 acc, __m512 x,
                                                                      __m512 y) {
#if RSD_RELAXED_NUMERICS
  return _mm512_fmadd_ps(x, y, acc);
#else
  return _mm512_add_ps(acc, _mm512_mul_ps(x, y));
#endif
}

// Brings bytes [offset, offset + n) of the group the caller reads next (the same shape as the one
// it computes now, or null) towards the core, a block at a time as the current group's blocks are
// computed: a matmul of several activation rows is bound by its arithmetic, and without this the
// next group's first touch would wait on memory with the arithmetic idle (and one row's would
// keep fewer reads in flight).
RSD_PACKED_AVX512 inline __attribute__((always_inline)) void PrefetchAhead(const uint8_t* next,
                                                                           size_t offset,
                                                                           size_t n) {
  if (next == nullptr) return;
  const char* p = reinterpret_cast<const char*>(next + offset);
  for (size_t off = 0; off < n; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
}

// Q4_1's offset term of the packed block at p (its 16 F16 minimums mw at p + 32) for block b of R
// activation rows: off[r] += mw * s_b of row r.
template <int R>
RSD_PACKED_AVX512 inline __attribute__((always_inline)) void AddQ41Offsets(const uint8_t* p,
                                                                           const Q8Row* a,
                                                                           int64_t b, __m512* off) {
  const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    off[r] = MulAdd(off[r], mw, _mm512_set1_ps(a[r].s[b]));
  }
}

// The 16 outputs of activation row r from its four class accumulators and offsets:
// ((acc0 + acc1) + (acc2 + acc3)) + ((off0 + off1) + (off2 + off3)) (+ bias), dot_quant.cc's
// Combine, stored at out.
RSD_PACKED_AVX512 inline void StoreCombined(const __m512* acc, const __m512* off, const float* bias,
                                            float* out) {
  const __m512 sa = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
  const __m512 so = _mm512_add_ps(_mm512_add_ps(off[0], off[1]), _mm512_add_ps(off[2], off[3]));
  __m512 v = _mm512_add_ps(sa, so);
  if (bias != nullptr) v = _mm512_add_ps(v, _mm512_loadu_ps(bias));
  _mm512_storeu_ps(out, v);
}

}  // namespace rsd::cpu
