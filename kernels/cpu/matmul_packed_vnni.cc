// PackedGroupDotsVnni (packed_weights.h): 16 output rows at a time. Per block and activation row,
// eight vpdpbusd (four for each half of a 4-bit block) take one broadcast group of four activation
// bytes each against a register of four weights for each of the 16 rows, leaving the block's exact
// integer sums of all 16 rows in one register; the bias of the unsigned weights (8 for Q4_0, 128
// for Q8_0) starts the sum as -bias * sum(q). Then, as on every path, acc += (dw * da) * P and for
// Q4_1 off += mw * s, one register per row holding the 16 outputs' accumulators of one class.
//
// GCC 12's AVX-512 headers pass an uninitialized `_mm512_undefined_*` value as the unused
// pass-through operand of unmasked intrinsics (GCC bug 105593); the operand is never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/packed_kernels.h"
#include "kernels/cpu/packed_weights.h"

namespace rsd::cpu {
namespace {

#define RSD_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c,fma")))

constexpr int kTileRows = 8;  // activation rows per pass over a group's weights

inline int32_t Load32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

template <DType T>
constexpr int32_t WeightBias() {
  return T == DType::kQ8_0 ? 128 : (T == DType::kQ4_0 ? 8 : 0);
}

// One packed block against R rows: s[r] = the exact integer sums of the 16 output rows.
template <DType T, int R>
RSD_VNNI inline __attribute__((always_inline)) void BlockSums(const uint8_t* qs, const Q8Row* a,
                                                              int64_t b, __m512i* s) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) s[r] = _mm512_set1_epi32(-WeightBias<T>() * a[r].sum[b]);
  if constexpr (T == DType::kQ8_0) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const __m512i w = _mm512_loadu_si512(qs + 64 * j);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        s[r] = _mm512_dpbusd_epi32(s[r], w, _mm512_set1_epi32(Load32(a[r].q + 32 * b + 4 * j)));
      }
    }
  } else {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
#pragma GCC unroll 8
    for (int j = 0; j < 4; ++j) {
      const __m512i z = _mm512_loadu_si512(qs + 64 * j);
      const __m512i lo = _mm512_and_si512(z, m4);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(z, 4), m4);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const int8_t* q = a[r].q + 32 * b + 4 * j;
        s[r] = _mm512_dpbusd_epi32(s[r], lo, _mm512_set1_epi32(Load32(q)));
        s[r] = _mm512_dpbusd_epi32(s[r], hi, _mm512_set1_epi32(Load32(q + 16)));
      }
    }
  }
}

template <DType T, int R>
RSD_VNNI void Tile(const uint8_t* group, int64_t nb, const Q8Row* a, const float* bias, float* out,
                   int64_t ldo, const uint8_t* next) {
  constexpr size_t pb = kPackRows * DTypeBlockBytes(T);
  constexpr int sb = T == DType::kQ4_1 ? 64 : 32;
  __m512 cls_acc[R][4], cls_off[R][4];  // row r's accumulators and offsets of classes 0..3
  const uint8_t* p = group;
#pragma GCC unroll 8
  for (int c = 0; c < 4; ++c) {
    __m512 acc[R], off[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r] = off[r] = _mm512_setzero_ps();
    for (int64_t b = c; b < nb; b += 4, p += pb) {
      PrefetchAhead(next, p - group, pb);
      __m512i s[R];
      BlockSums<T, R>(p + sb, a, b, s);
      const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(a[r].d[b]));
        acc[r] = MulAdd(acc[r], scale, _mm512_cvtepi32_ps(s[r]));
      }
      if constexpr (T == DType::kQ4_1) AddQ41Offsets<R>(p, a, b, off);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      cls_acc[r][c] = acc[r];
      cls_off[r][c] = off[r];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) StoreCombined(cls_acc[r], cls_off[r], bias, out + r * ldo);
}

// The last n < kTileRows rows: the tile of exactly n rows (R counts down to it).
template <DType T, int R = kTileRows - 1>
void TailTile(int64_t n, const uint8_t* group, int64_t nb, const Q8Row* a, const float* bias,
              float* out, int64_t ldo, const uint8_t* next) {
  if constexpr (R >= 1) {
    if (n == R) return Tile<T, R>(group, nb, a, bias, out, ldo, next);
    TailTile<T, R - 1>(n, group, nb, a, bias, out, ldo, next);
  }
}

template <DType T>
void Rows(const uint8_t* group, int64_t nb, const Q8Row* a, int64_t n, const float* bias,
          float* out, int64_t ldo, const uint8_t* next) {
  // The first pass prefetches the next group; the others find it on its way.
  int64_t r = 0;
  for (; r + kTileRows <= n; r += kTileRows) {
    Tile<T, kTileRows>(group, nb, a + r, bias, out + r * ldo, ldo, r == 0 ? next : nullptr);
  }
  TailTile<T>(n - r, group, nb, a + r, bias, out + r * ldo, ldo, r == 0 ? next : nullptr);
}

}  // namespace

void PackedGroupDotsVnni(DType wtype, const uint8_t* group, int64_t nb, const Q8Row* a,
                         int64_t n_rows, const float* bias, float* out, int64_t ldo,
                         const uint8_t* next) {
  switch (wtype) {
    case DType::kQ4_1:
      Rows<DType::kQ4_1>(group, nb, a, n_rows, bias, out, ldo, next);
      break;
    case DType::kQ4_0:
      Rows<DType::kQ4_0>(group, nb, a, n_rows, bias, out, ldo, next);
      break;
    default:
      Rows<DType::kQ8_0>(group, nb, a, n_rows, bias, out, ldo, next);
      break;
  }
}

}  // namespace rsd::cpu
