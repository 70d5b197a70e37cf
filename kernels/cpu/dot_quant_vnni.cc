// The quantized dot on AVX-512 VNNI: two 32-value blocks per 512-bit register, integer lanes from
// vpdpbusd, the block scales applied in 16 float lanes. The arithmetic is the one dot_quant.cc
// spells out for every path (same integer lanes, same float operations in the same order), so the
// bits are the scalar path's:
// - vpdpbusd adds four adjacent u8 x s8 products into each int32 lane: for a block at bytes
//   [32h, 32h + 32) of the register, lane 8h + j is exactly p_j of dot_quant.cc (exact integers;
//   signed weights go in as |w| with the sign moved onto the activation, which is at most 127 in
//   magnitude so its negation is exact);
// - blocks b .. b+3 of a group of four go as (b, b+1) into register A and (b+2, b+3) into B, so A
//   holds accumulator classes 0 and 1 (lanes 0-7 and 8-15) and B classes 2 and 3, and every lane
//   receives acc[b % 4][j] + (dw * da) * p_j for the same blocks in the same order as the scalar
//   path; a last group of fewer than four blocks updates only its blocks' lanes (masked adds).
// GCC 12's AVX-512 headers pass an uninitialized `_mm512_undefined_*` value as the unused
// pass-through operand of unmasked intrinsics, which -Wuninitialized reports at every use (GCC
// bug 105593); the operand is never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "kernels/cpu/dot_quant_vnni.h"

#include <immintrin.h>

#include <cstring>

namespace rsd::cpu {
namespace {

#define RSD_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c")))

constexpr int QsOffset(DType t) { return t == DType::kQ4_1 ? 4 : 2; }

// The payload of blocks b (bytes 0-31) and b+1 (32-63) as unsigned magnitudes, with the mask of
// the negative weights for the signed types. `two` false: only block b (the rest zero).
template <DType T>
RSD_VNNI inline __m512i UnpackPair(const uint8_t* blk, bool two, __mmask64* neg) {
  constexpr size_t bb = DTypeBlockBytes(T);
  constexpr int qo = QsOffset(T);
  __m512i v;
  if constexpr (T == DType::kQ8_0) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + qo));
    const __m256i hi = two ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + bb + qo))
                           : _mm256_setzero_si256();
    v = _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);
  } else {
    const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + qo));
    const __m128i r1 = two ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + bb + qo))
                           : _mm_setzero_si128();
    // [r0, r0, r1, r1], the odd quarters shifted by a nibble: [lo0, hi0, lo1, hi1] once masked.
    const __m512i raw = _mm512_zextsi256_si512(_mm256_set_m128i(r1, r0));
    v = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), raw);
    v = _mm512_and_si512(_mm512_srlv_epi64(v, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4)),
                         _mm512_set1_epi8(0x0F));
    if constexpr (T == DType::kQ4_0) v = _mm512_sub_epi8(v, _mm512_set1_epi8(8));
  }
  if constexpr (T == DType::kQ4_1) {
    *neg = 0;
    return v;
  } else {
    *neg = _mm512_movepi8_mask(v);
    return _mm512_abs_epi8(v);
  }
}

inline uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// F16 values at p, p + stride, ... (n <= 4 of them; the rest 0) as floats.
RSD_VNNI inline __m128 LoadF16s(const uint8_t* p, size_t stride, int n) {
  const auto at = [&](int i) { return i < n ? LoadU16(p + i * stride) : uint16_t{0}; };
  return _mm_cvtph_ps(_mm_setr_epi16(at(0), at(1), at(2), at(3), 0, 0, 0, 0));
}

// Lanes 0-7 from float f[i0], lanes 8-15 from f[i1].
RSD_VNNI inline __m512 Widen(__m128 f, int i0, int i1) {
  const __m512i idx =
      _mm512_inserti64x4(_mm512_zextsi256_si512(_mm256_set1_epi32(i0)), _mm256_set1_epi32(i1), 1);
  return _mm512_permutexvar_ps(idx, _mm512_zextps128_ps512(f));
}

// Bytes and lanes of a half-filled pair (blocks b only) or a full one.
constexpr __mmask64 PairBytes(bool two) { return two ? ~0ull : 0xFFFFFFFFull; }
constexpr __mmask16 PairLanes(bool two) { return two ? 0xFFFF : 0x00FF; }

// acc = acc + (S * p) over the pair's lanes: S the pair's block scales dw * da (lanes 0-7 and
// 8-15), p its integer lanes (weights w against the activation bytes at q).
template <DType T, bool Two>
RSD_VNNI inline __m512 PairStep(__m512 acc, __m512i w, __mmask64 neg, const int8_t* q, __m512 s) {
  __m512i x;
  if constexpr (Two) {
    x = _mm512_loadu_si512(q);
  } else {
    x = _mm512_maskz_loadu_epi8(PairBytes(false), q);
  }
  if constexpr (T != DType::kQ4_1) x = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
  const __m512 p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x));
  const __m512 m = _mm512_mul_ps(s, p);
  if constexpr (Two) return _mm512_add_ps(acc, m);
  return _mm512_mask_add_ps(acc, PairLanes(false), acc, m);
}

// One group of N <= 4 blocks starting at block b, for R rows (N < 4 only at the end of a row).
template <DType T, int R, int N>
RSD_VNNI inline void Group(const uint8_t* blk, const Q8Row* a, int64_t b, __m512* acc_a,
                           __m512* acc_b, __m128* off) {
  constexpr size_t bb = DTypeBlockBytes(T);
  constexpr __mmask8 kBlocks = static_cast<__mmask8>((1u << N) - 1);
  __mmask64 neg01, neg23 = 0;
  const __m512i w01 = UnpackPair<T>(blk, N >= 2, &neg01);
  __m512i w23 = _mm512_setzero_si512();
  if constexpr (N >= 3) w23 = UnpackPair<T>(blk + 2 * bb, N >= 4, &neg23);
  const __m128 dw = LoadF16s(blk, bb, N);
  __m128 mw = _mm_setzero_ps();
  if constexpr (T == DType::kQ4_1) mw = LoadF16s(blk + 2, bb, N);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const int8_t* q = a[r].q + b * kQBlock;
    const __m128 s =
        _mm_mul_ps(dw, N == 4 ? _mm_loadu_ps(a[r].d + b) : _mm_maskz_loadu_ps(kBlocks, a[r].d + b));
    acc_a[r] = PairStep<T, N >= 2>(acc_a[r], w01, neg01, q, Widen(s, 0, 1));
    if constexpr (N >= 3) {
      acc_b[r] = PairStep<T, N >= 4>(acc_b[r], w23, neg23, q + 64, Widen(s, 2, 3));
    }
    if constexpr (T == DType::kQ4_1) {
      if constexpr (N == 4) {
        off[r] = _mm_add_ps(off[r], _mm_mul_ps(mw, _mm_loadu_ps(a[r].s + b)));
      } else {
        off[r] = _mm_mask_add_ps(off[r], kBlocks, off[r],
                                 _mm_mul_ps(mw, _mm_maskz_loadu_ps(kBlocks, a[r].s + b)));
      }
    }
  }
}

// (acc0 + acc1) + (acc2 + acc3), folded j += j+4, j+2, j+1, plus the Q4_1 offsets
// (off0 + off1) + (off2 + off3).
RSD_VNNI inline float Finish(__m512 acc_a, __m512 acc_b, __m128 off) {
  const __m256 a0 = _mm512_castps512_ps256(acc_a);
  const __m256 a1 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc_a), 1));
  const __m256 b0 = _mm512_castps512_ps256(acc_b);
  const __m256 b1 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc_b), 1));
  const __m256 sum = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(b0, b1));
  __m128 v = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
  alignas(16) float o[4];
  _mm_store_ps(o, off);
  return _mm_cvtss_f32(v) + ((o[0] + o[1]) + (o[2] + o[3]));
}

// Finish for four rows at once: the same additions, four rows to a register.
RSD_VNNI inline void Finish4(const __m512* acc_a, const __m512* acc_b, const __m128* off,
                             float* out) {
  __m512 z[4];  // [acc0 + acc1 | acc2 + acc3] of each row
  for (int r = 0; r < 4; ++r) {
    z[r] = _mm512_add_ps(_mm512_shuffle_f32x4(acc_a[r], acc_b[r], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(acc_a[r], acc_b[r], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  __m512 f[2];  // the eight-lane sums of rows 2i and 2i+1, then j += j+4 in each
  for (int i = 0; i < 2; ++i) {
    const __m512 w =
        _mm512_add_ps(_mm512_shuffle_f32x4(z[2 * i], z[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                      _mm512_shuffle_f32x4(z[2 * i], z[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    f[i] = _mm512_add_ps(w, _mm512_shuffle_f32x4(w, w, _MM_SHUFFLE(2, 3, 0, 1)));
  }
  __m512 v = _mm512_shuffle_f32x4(f[0], f[1], _MM_SHUFFLE(2, 0, 2, 0));  // row r in quarter r
  v = _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1)));
  __m512 o = _mm512_zextps128_ps512(off[0]);
  o = _mm512_insertf32x4(o, off[1], 1);
  o = _mm512_insertf32x4(o, off[2], 2);
  o = _mm512_insertf32x4(o, off[3], 3);
  o = _mm512_add_ps(o, _mm512_permute_ps(o, _MM_SHUFFLE(2, 3, 0, 1)));
  o = _mm512_add_ps(o, _mm512_permute_ps(o, _MM_SHUFFLE(1, 0, 3, 2)));
  _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_maskz_compress_ps(0x1111, _mm512_add_ps(v, o))));
}

template <DType T, int R>
RSD_VNNI void RowsVnni(const uint8_t* w, const Q8Row* a, int64_t nb, float* out) {
  constexpr size_t bb = DTypeBlockBytes(T);
  __m512 acc_a[R], acc_b[R];
  __m128 off[R];
  for (int r = 0; r < R; ++r) {
    acc_a[r] = _mm512_setzero_ps();
    acc_b[r] = _mm512_setzero_ps();
    off[r] = _mm_setzero_ps();
  }
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) Group<T, R, 4>(w + b * bb, a, b, acc_a, acc_b, off);
  switch (nb - b) {
    case 3:
      Group<T, R, 3>(w + b * bb, a, b, acc_a, acc_b, off);
      break;
    case 2:
      Group<T, R, 2>(w + b * bb, a, b, acc_a, acc_b, off);
      break;
    case 1:
      Group<T, R, 1>(w + b * bb, a, b, acc_a, acc_b, off);
      break;
    default:
      break;
  }
  if constexpr (R % 4 == 0) {
    for (int r = 0; r < R; r += 4) Finish4(acc_a + r, acc_b + r, off + r, out + r);
  } else {
    for (int r = 0; r < R; ++r) out[r] = Finish(acc_a[r], acc_b[r], off[r]);
  }
}

template <DType T>
void Dispatch(const uint8_t* w, const Q8Row* a, int64_t n_rows, int64_t nb, float* out) {
  int64_t r = 0;
  for (; r + 4 <= n_rows; r += 4) RowsVnni<T, 4>(w, a + r, nb, out + r);
  switch (n_rows - r) {
    case 3:
      RowsVnni<T, 3>(w, a + r, nb, out + r);
      break;
    case 2:
      RowsVnni<T, 2>(w, a + r, nb, out + r);
      break;
    case 1:
      RowsVnni<T, 1>(w, a + r, nb, out + r);
      break;
    default:
      break;
  }
}

}  // namespace

void QuantDotRowsVnni(DType t, const uint8_t* w, const Q8Row* a, int64_t n_rows, int64_t nb,
                      float* out) {
  if (t == DType::kQ4_1) {
    Dispatch<DType::kQ4_1>(w, a, n_rows, nb, out);
  } else if (t == DType::kQ4_0) {
    Dispatch<DType::kQ4_0>(w, a, n_rows, nb, out);
  } else {
    Dispatch<DType::kQ8_0>(w, a, n_rows, nb, out);
  }
}

}  // namespace rsd::cpu
