// The quantized dot on AVX-512 VNNI. The arithmetic is the one dot_quant.cc spells out for every
// path, so the bits are the scalar path's:
// - a group of four blocks is one register: quarter k holds the first 16 weights of block k (lo)
//   or its last 16 (hi), as unsigned bytes u (the nibble; for Q8_0, w + 128), and two vpdpbusd
//   against the matching activation bytes leave four int32 lanes per block whose sum is
//   sum(u * q); subtracting c * sum(q) (c = 8 for Q4_0, 128 for Q8_0, from the row's exact block
//   sums) gives P_b exactly;
// - the four lanes of each quarter are summed in place, and quarter k's float lanes carry acc[k];
//   the activation halves are picked out of the row with a permute;
// - each block updates its class with one multiply by dw * da and one add, a last group of fewer
//   than four blocks only its blocks' lanes (masked adds); Q4_1's offsets the same way; then
//   ((acc0 + acc1) + (acc2 + acc3)) + ((off0 + off1) + (off2 + off3)).
// This path reads weights in the file's row-major layout, one activation row at a time; a
// matmul over weights the backend uploaded runs the packed kernel (matmul_packed_vnni.cc).
//
// GCC 12's AVX-512 headers pass an uninitialized `_mm512_undefined_*` value as the unused
// pass-through operand of unmasked intrinsics, which -Wuninitialized reports at every use (GCC
// bug 105593); the operand is never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "kernels/cpu/dot_quant_vnni.h"

#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/quant_block.h"

namespace rsd::cpu {
namespace {

#define RSD_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c")))
// Helpers are forced inline: GCC does not always inline target-attributed functions, and a call
// per block group costs more than the group.
#define RSD_VNNI_INLINE RSD_VNNI inline __attribute__((always_inline))

// F16 values at p, p + stride, ... (N <= 4 of them; the rest 0) as floats.
template <int N>
RSD_VNNI_INLINE __m128 LoadF16s(const uint8_t* p, size_t stride) {
  uint16_t h[4];
  for (int i = 0; i < 4; ++i) h[i] = i < N ? LoadU16(p + i * stride) : uint16_t{0};
  return _mm_cvtph_ps(_mm_setr_epi16(h[0], h[1], h[2], h[3], 0, 0, 0, 0));
}

// The block scales dw (and for Q4_1 the minimums mw) of N blocks as floats (the rest 0). Q4_1
// blocks start with the two F16 values side by side: one 32-bit load per block gives both.
template <DType T, int N>
RSD_VNNI_INLINE void LoadScales(const uint8_t* blk, __m128* dw, __m128* mw) {
  constexpr size_t bb = DTypeBlockBytes(T);
  if constexpr (T == DType::kQ4_1) {
    uint32_t v[4];
    for (int k = 0; k < 4; ++k) {
      v[k] = 0;
      if (k < N) std::memcpy(&v[k], blk + k * bb, 4);
    }
    const __m256 f =
        _mm256_cvtph_ps(_mm_setr_epi32(static_cast<int>(v[0]), static_cast<int>(v[1]),
                                       static_cast<int>(v[2]), static_cast<int>(v[3])));
    *dw = _mm256_castps256_ps128(
        _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0)));
    *mw = _mm256_castps256_ps128(
        _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(1, 3, 5, 7, 0, 0, 0, 0)));
  } else {
    *dw = LoadF16s<N>(blk, bb);
    *mw = _mm_setzero_ps();
  }
}

// Quarter k: the 16 payload bytes at `off` of block k (k < N; zero past N).
template <DType T, int N>
RSD_VNNI_INLINE __m512i JoinQuarters(const uint8_t* blk, int off) {
  constexpr size_t bb = DTypeBlockBytes(T);
  constexpr int qo = QsOffset(T);
  __m128i part[4];
  for (int k = 0; k < 4; ++k) {
    part[k] = k < N ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + k * bb + qo + off))
                    : _mm_setzero_si128();
  }
  return _mm512_inserti64x4(_mm512_zextsi256_si512(_mm256_set_m128i(part[1], part[0])),
                            _mm256_set_m128i(part[3], part[2]), 1);
}

// The unsigned weight bytes of N blocks: quarter k of *lo the values 0-15 of block k, of *hi the
// values 16-31 (quarters past N zero).
template <DType T, int N>
RSD_VNNI_INLINE void UnpackGroup(const uint8_t* blk, __m512i* lo, __m512i* hi) {
  const __m512i a = JoinQuarters<T, N>(blk, 0);
  __m512i b = _mm512_setzero_si512();
  if constexpr (T == DType::kQ8_0) b = JoinQuarters<T, N>(blk, 16);
  if constexpr (T == DType::kQ8_0) {
    const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
    *lo = _mm512_xor_si512(a, bias);
    *hi = _mm512_xor_si512(b, bias);  // missing blocks: 128, against zero activations
  } else {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    *lo = _mm512_and_si512(a, m4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(a, 4), m4);
  }
}

// sum(u * q) of N blocks of one activation row, as four lanes per block in quarter k.
template <int N>
RSD_VNNI_INLINE __m512i RowLanes(const int8_t* q, __m512i lo, __m512i hi) {
  __m512i l0, l1;
  if constexpr (N == 4) {
    l0 = _mm512_loadu_si512(q);
    l1 = _mm512_loadu_si512(q + 64);
  } else {
    constexpr int bytes = 32 * N;
    l0 = _mm512_maskz_loadu_epi8(bytes >= 64 ? ~0ull : (1ull << bytes) - 1, q);
    l1 = _mm512_maskz_loadu_epi8(bytes > 64 ? (1ull << (bytes - 64)) - 1 : 0ull, q + 64);
  }
  // Quarter k: the activation bytes 0-15 (x_lo) or 16-31 (x_hi) of block k.
  const __m512i x_lo =
      _mm512_permutex2var_epi64(l0, _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13), l1);
  const __m512i x_hi =
      _mm512_permutex2var_epi64(l0, _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15), l1);
  return _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, x_lo), hi, x_hi);
}

// One row (decode): the group's lanes summed within each quarter (every lane of quarter k then
// holds P of block k), the scales widened to quarters; acc[k] lives (four times) in quarter k.
template <DType T, int N>
RSD_VNNI_INLINE void Row1Group(const uint8_t* blk, const Q8Row& a, int64_t b, __m512* acc,
                               __m128* off) {
  constexpr __mmask8 kBlocks = static_cast<__mmask8>((1u << N) - 1);
  __m512i lo, hi;
  UnpackGroup<T, N>(blk, &lo, &hi);
  __m512i p = RowLanes<N>(a.q + b * kQBlock, lo, hi);
  p = _mm512_add_epi32(p, _mm512_shuffle_epi32(p, _MM_PERM_CDAB));
  p = _mm512_add_epi32(p, _mm512_shuffle_epi32(p, _MM_PERM_BADC));
  if constexpr (T != DType::kQ4_1) {
    const __m128i sums = _mm_maskz_loadu_epi32(kBlocks, a.sum + b);
    const __m512i wide =
        _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                 _mm512_zextsi128_si512(sums));
    p = _mm512_sub_epi32(p, _mm512_slli_epi32(wide, T == DType::kQ4_0 ? 3 : 7));
  }
  __m128 dw, mw;
  LoadScales<T, N>(blk, &dw, &mw);
  const __m128 s4 = _mm_mul_ps(dw, _mm_maskz_loadu_ps(kBlocks, a.d + b));
  const __m512 s =
      _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                            _mm512_zextps128_ps512(s4));
  constexpr __mmask16 kLanes = static_cast<__mmask16>(N == 4 ? 0xFFFF : (1u << (4 * N)) - 1);
  *acc = _mm512_mask_add_ps(*acc, kLanes, *acc, _mm512_mul_ps(s, _mm512_cvtepi32_ps(p)));
  if constexpr (T == DType::kQ4_1) {
    *off =
        _mm_mask_add_ps(*off, kBlocks, *off, _mm_mul_ps(mw, _mm_maskz_loadu_ps(kBlocks, a.s + b)));
  }
}

template <DType T>
RSD_VNNI float Row1(const uint8_t* w, const Q8Row& a, int64_t nb) {
  constexpr size_t bb = DTypeBlockBytes(T);
  __m512 acc = _mm512_setzero_ps();
  __m128 off = _mm_setzero_ps();
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) Row1Group<T, 4>(w + b * bb, a, b, &acc, &off);
  switch (nb - b) {
    case 3:
      Row1Group<T, 3>(w + b * bb, a, b, &acc, &off);
      break;
    case 2:
      Row1Group<T, 2>(w + b * bb, a, b, &acc, &off);
      break;
    case 1:
      Row1Group<T, 1>(w + b * bb, a, b, &acc, &off);
      break;
    default:
      break;
  }
  const __m128 l = _mm512_castps512_ps128(_mm512_maskz_compress_ps(0x1111, acc));
  alignas(16) float al[4], ol[4];
  _mm_store_ps(al, l);
  _mm_store_ps(ol, off);
  return ((al[0] + al[1]) + (al[2] + al[3])) + ((ol[0] + ol[1]) + (ol[2] + ol[3]));
}

}  // namespace

void QuantDotRowsVnni(DType t, const uint8_t* w, const Q8Row* a, int64_t n_rows, int64_t nb,
                      float* out) {
  for (int64_t r = 0; r < n_rows; ++r) {
    if (t == DType::kQ4_1) {
      out[r] = Row1<DType::kQ4_1>(w, a[r], nb);
    } else if (t == DType::kQ4_0) {
      out[r] = Row1<DType::kQ4_0>(w, a[r], nb);
    } else {
      out[r] = Row1<DType::kQ8_0>(w, a[r], nb);
    }
  }
}

}  // namespace rsd::cpu
