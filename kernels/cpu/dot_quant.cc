// Integer block sums for quantized weights (exact, so every ISA path agrees) and the shared float
// combination of blocks.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/dot_quant_vnni.h"
#include "kernels/cpu/quant_block.h"

namespace rsd::cpu {
namespace {

void BlockIntDotsScalar(DType t, const uint8_t* w, const int8_t* q, int64_t nb, int32_t* sums) {
  const size_t bb = DTypeBlockBytes(t);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* qs = w + b * bb + QsOffset(t);
    const int8_t* a = q + b * kQBlock;
    int32_t s = 0;
    if (t == DType::kQ8_0) {
      for (int i = 0; i < 32; ++i) s += static_cast<int8_t>(qs[i]) * a[i];
    } else {
      for (int i = 0; i < 16; ++i) {
        s += (qs[i] & 0x0F) * a[i];
        s += (qs[i] >> 4) * a[i + 16];
      }
    }
    sums[b] = s;
  }
}

// The arithmetic every path follows (so every path gives the same bits):
//   for each block b: P_b = the sum of its 32 products w_i * q_i (an exact int32; Q4_0 uses
//   w_i = nibble - 8), and acc[b % 4] += (dw * da) * float(P_b) (float(P_b) is exact: |P_b| <
//   2^20); Q4_1 also adds mw * s_b into off[b % 4];
//   result = ((acc0 + acc1) + (acc2 + acc3)) + ((off0 + off1) + (off2 + off3)).
// One float multiply-add per block and row, as llama.cpp's own arithmetic has; the integer work,
// exact on every path, is where the ISA paths differ. Four accumulators keep consecutive blocks'
// adds independent, and on the vector paths a group of four blocks updates them as one register.
inline int32_t WeightInt(DType t, const uint8_t* qs, int i) {
  if (t == DType::kQ8_0) return static_cast<int8_t>(qs[i]);
  const int nib = i < 16 ? (qs[i] & 0x0F) : (qs[i - 16] >> 4);
  return t == DType::kQ4_0 ? nib - 8 : nib;
}

inline float Combine(const float* acc, const float* off) {
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((off[0] + off[1]) + (off[2] + off[3]));
}

float QuantDotScalar(DType t, const uint8_t* w, const Q8Row& a, int64_t nb) {
  float acc[4] = {0}, off[4] = {0};
  const size_t bb = DTypeBlockBytes(t);
  const int qo = QsOffset(t);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = w + b * bb;
    const int8_t* q = a.q + b * kQBlock;
    int32_t p = 0;
    for (int i = 0; i < kQBlock; ++i) p += WeightInt(t, blk + qo, i) * q[i];
    const float scale = F16ToF32(LoadU16(blk)) * a.d[b];
    acc[b & 3] = acc[b & 3] + scale * static_cast<float>(p);
    if (t == DType::kQ4_1) off[b & 3] = off[b & 3] + F16ToF32(LoadU16(blk + 2)) * a.s[b];
  }
  return Combine(acc, off);
}

// Four F16 values at p, p + stride, p + 2 stride, p + 3 stride, as floats.
__attribute__((target("avx2,f16c"))) inline __m128 Load4F16(const uint8_t* p, size_t stride) {
  return _mm_cvtph_ps(_mm_setr_epi16(LoadU16(p), LoadU16(p + stride), LoadU16(p + 2 * stride),
                                     LoadU16(p + 3 * stride), 0, 0, 0, 0));
}

// A block's weights as maddubs takes them: unsigned magnitudes, and for Q8_0 the signed bytes
// whose signs move onto the activation (Q4_0 keeps its raw nibbles; 8 * sum(q) comes off later).
template <DType t>
__attribute__((target("avx2"))) inline void UnpackAvx2(const uint8_t* qs, __m256i* mag,
                                                       __m256i* sign) {
  if constexpr (t == DType::kQ8_0) {
    *sign = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs));
    *mag = _mm256_sign_epi8(*sign, *sign);
  } else {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m128i m4 = _mm_set1_epi8(0x0F);
    *mag = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4));
    *sign = *mag;
  }
}

// Eight exact int32 lanes whose sum is the block's sum(w * q) (raw nibbles for Q4_0).
template <DType t>
__attribute__((target("avx2"))) inline __m256i LanesAvx2(__m256i mag, __m256i sign,
                                                         const int8_t* q) {
  __m256i act = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
  if constexpr (t == DType::kQ8_0) act = _mm256_sign_epi8(act, sign);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(mag, act), _mm256_set1_epi16(1));
}

// Eight lanes of one block (quarter-sums of its products) from the block's payload at qs.
template <DType t>
__attribute__((target("avx2"))) inline __m256i BlockLanesAvx2(const uint8_t* qs, const int8_t* q) {
  __m256i mag, sign;
  UnpackAvx2<t>(qs, &mag, &sign);
  return LanesAvx2<t>(mag, sign, q);
}

// The lane sums of four blocks' lanes (exact): element k is the sum of l[k]'s eight lanes.
__attribute__((target("avx2"))) inline __m128i SumsOfFourAvx2(const __m256i* l) {
  const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(l[0], l[1]), _mm256_hadd_epi32(l[2], l[3]));
  return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

// The sum of one block's eight lanes (exact).
__attribute__((target("avx2"))) inline int32_t SumOfEightAvx2(__m256i lanes) {
  __m128i h = _mm_add_epi32(_mm256_castsi256_si128(lanes), _mm256_extracti128_si256(lanes, 1));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
  return _mm_cvtsi128_si32(h);
}

// BlockIntDots' sums (raw nibbles for the 4-bit types) with the lanes the kernels use.
template <DType t>
__attribute__((target("avx2"))) void BlockIntDotsAvx2(const uint8_t* w, const int8_t* q, int64_t nb,
                                                      int32_t* sums) {
  constexpr size_t bb = DTypeBlockBytes(t);
  constexpr int qo = QsOffset(t);
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    __m256i l[4];
    for (int k = 0; k < 4; ++k) {
      l[k] = BlockLanesAvx2<t>(w + (b + k) * bb + qo, q + (b + k) * kQBlock);
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(sums + b), SumsOfFourAvx2(l));
  }
  for (; b < nb; ++b) {
    sums[b] = SumOfEightAvx2(BlockLanesAvx2<t>(w + b * bb + qo, q + b * kQBlock));
  }
}

// R rows (R <= 4) against one weight row. A group of four blocks is unpacked once for all rows;
// per row its P_b .. P_b+3 (exact) update acc[0..3] as the lanes of one register. The blocks after
// the last full group go one by one into acc[b % 4], as the scalar path.
template <DType t, int R>
__attribute__((target("avx2,f16c"))) void RowsAvx2(const uint8_t* w, const Q8Row* a, int64_t nb,
                                                   float* out) {
  constexpr size_t bb = DTypeBlockBytes(t);
  constexpr int qo = QsOffset(t);
  __m128 acc[R], off[R];
  for (int r = 0; r < R; ++r) acc[r] = off[r] = _mm_setzero_ps();
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    const uint8_t* blk = w + b * bb;
    const __m128 dw = Load4F16(blk, bb);
    __m128 mw = _mm_setzero_ps();
    if constexpr (t == DType::kQ4_1) mw = Load4F16(blk + 2, bb);
    __m256i mag[4], sign[4];
    for (int k = 0; k < 4; ++k) UnpackAvx2<t>(blk + k * bb + qo, &mag[k], &sign[k]);
    for (int r = 0; r < R; ++r) {
      const int8_t* q = a[r].q + b * kQBlock;
      __m256i l[4];
      for (int k = 0; k < 4; ++k) l[k] = LanesAvx2<t>(mag[k], sign[k], q + k * kQBlock);
      __m128i p = SumsOfFourAvx2(l);
      if constexpr (t == DType::kQ4_0) {
        p = _mm_sub_epi32(
            p, _mm_slli_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a[r].sum + b)), 3));
      }
      const __m128 scale = _mm_mul_ps(dw, _mm_loadu_ps(a[r].d + b));
      acc[r] = _mm_add_ps(acc[r], _mm_mul_ps(scale, _mm_cvtepi32_ps(p)));
      if constexpr (t == DType::kQ4_1) {
        off[r] = _mm_add_ps(off[r], _mm_mul_ps(mw, _mm_loadu_ps(a[r].s + b)));
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    alignas(16) float accl[4], offl[4];
    _mm_store_ps(accl, acc[r]);
    _mm_store_ps(offl, off[r]);
    for (int64_t c = b; c < nb; ++c) {
      const uint8_t* blk = w + c * bb;
      int32_t p = SumOfEightAvx2(BlockLanesAvx2<t>(blk + qo, a[r].q + c * kQBlock));
      if constexpr (t == DType::kQ4_0) p -= 8 * a[r].sum[c];
      const float scale = _cvtsh_ss(LoadU16(blk)) * a[r].d[c];
      accl[c & 3] = accl[c & 3] + scale * static_cast<float>(p);
      if constexpr (t == DType::kQ4_1) {
        offl[c & 3] = offl[c & 3] + _cvtsh_ss(LoadU16(blk + 2)) * a[r].s[c];
      }
    }
    out[r] = Combine(accl, offl);
  }
}

template <DType t>
void RowsAvx2Dispatch(const uint8_t* w, const Q8Row* a, int64_t n_rows, int64_t nb, float* out) {
  int64_t r = 0;
  for (; r + 4 <= n_rows; r += 4) RowsAvx2<t, 4>(w, a + r, nb, out + r);
  switch (n_rows - r) {
    case 3:
      RowsAvx2<t, 3>(w, a + r, nb, out + r);
      break;
    case 2:
      RowsAvx2<t, 2>(w, a + r, nb, out + r);
      break;
    case 1:
      RowsAvx2<t, 1>(w, a + r, nb, out + r);
      break;
    default:
      break;
  }
}

}  // namespace

namespace {

// A block's scale before its F16 rounding, and that rounding (x to F16 and back).
inline float RawScale(float amax) { return amax / 127.0f; }
inline float ThroughF16(float x) { return F16ToF32(F32ToF16(x)); }

// The scale and offset term of a block from its max |x| and integer sum (shared by both paths).
inline void BlockScale(float amax, int32_t total, float* d, int32_t* sum, float* s) {
  const float db = RawScale(amax);
  *d = ThroughF16(db);
  *sum = total;
  *s = ThroughF16(db * static_cast<float>(total));
}

inline float InverseScale(float amax) { return amax != 0.0f ? 127.0f / amax : 0.0f; }

void QuantizeQ8RowScalar(const float* x, int64_t k, int8_t* q, float* d, int32_t* sum, float* s) {
  for (int64_t b = 0; b < k / kQBlock; ++b) {
    const float* xb = x + b * kQBlock;
    float amax = 0.0f;
    for (int i = 0; i < kQBlock; ++i) {
      const float v = std::fabs(xb[i]);
      amax = v > amax ? v : amax;
    }
    const float id = InverseScale(amax);
    int32_t total = 0;
    for (int i = 0; i < kQBlock; ++i) {
      float v = std::nearbyint(xb[i] * id);
      v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
      q[b * kQBlock + i] = static_cast<int8_t>(v);
      total += static_cast<int32_t>(v);
    }
    BlockScale(amax, total, d + b, sum + b, s + b);
  }
}

// x rounded to F16 and back, eight at a time: F16C's round to nearest even is F32ToF16's.
__attribute__((target("avx2,f16c"))) inline __m256 ThroughF16(__m256 x) {
  return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}

// Blocks' scales before their values: id[b] = InverseScale(amax[b]), db[b] = amax[b] / 127 and
// d[b] its F16 rounding, for b < n; eight blocks a vector (each division correctly rounded, as
// the scalar one), the rest one at a time.
__attribute__((target("avx2,f16c"))) void ScalesAvx2(const float* amax, int n, float* id, float* db,
                                                     float* d) {
  const __m256 k127 = _mm256_set1_ps(127.0f);
  int b = 0;
  for (; b + 8 <= n; b += 8) {
    const __m256 a = _mm256_loadu_ps(amax + b);
    const __m256 nonzero = _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_NEQ_UQ);
    _mm256_storeu_ps(id + b, _mm256_and_ps(nonzero, _mm256_div_ps(k127, a)));
    const __m256 scale = _mm256_div_ps(a, k127);
    _mm256_storeu_ps(db + b, scale);
    _mm256_storeu_ps(d + b, ThroughF16(scale));
  }
  for (; b < n; ++b) {
    id[b] = InverseScale(amax[b]);
    db[b] = RawScale(amax[b]);
    d[b] = ThroughF16(db[b]);
  }
}

// s[b] = F16 rounding of db[b] * total[b], for b < n (BlockScale's product).
__attribute__((target("avx2,f16c"))) void OffsetsAvx2(const float* db, const int32_t* total, int n,
                                                      float* s) {
  int b = 0;
  for (; b + 8 <= n; b += 8) {
    const __m256 t =
        _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(total + b)));
    _mm256_storeu_ps(s + b, ThroughF16(_mm256_mul_ps(_mm256_loadu_ps(db + b), t)));
  }
  for (; b < n; ++b) s[b] = ThroughF16(db[b] * static_cast<float>(total[b]));
}

// The scalar path's operations eight at a time: max of |x| (exact in any order for non-NaN
// values), the same product x * id, round to nearest even (nearbyint's mode), the same clamp,
// exact int sums. The blocks' scales go eight blocks a vector (ScalesAvx2, OffsetsAvx2), in runs
// of up to kScaleRun blocks: each block's maximum first, then the scales, then its values.
__attribute__((target("avx2,f16c"))) void QuantizeQ8RowAvx2(const float* x, int64_t k, int8_t* q,
                                                            float* d, int32_t* sum, float* s) {
  constexpr int kScaleRun = 64;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  alignas(32) float amax[kScaleRun], id[kScaleRun], db[kScaleRun];
  const int64_t nb = k / kQBlock;
  for (int64_t b0 = 0; b0 < nb; b0 += kScaleRun) {
    const int n = static_cast<int>(std::min<int64_t>(kScaleRun, nb - b0));
    for (int i = 0; i < n; ++i) {
      const float* xb = x + (b0 + i) * kQBlock;
      __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xb)),
                                             _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + 8))),
                               _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xb + 16)),
                                             _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + 24))));
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
      amax[i] = _mm_cvtss_f32(m4);
    }
    ScalesAvx2(amax, n, id, db, d + b0);
    for (int i = 0; i < n; ++i) {
      const int64_t b = b0 + i;
      const float* xb = x + b * kQBlock;
      const __m256 idv = _mm256_set1_ps(id[i]);
      __m256i iv[4];
      for (int j = 0; j < 4; ++j) {
        __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xb + 8 * j), idv),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
        iv[j] = _mm256_cvtps_epi32(r);
      }
      const __m256i packed =
          _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]), _mm256_packs_epi32(iv[2], iv[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kQBlock),
                          _mm256_permutevar8x32_epi32(packed, order));
      const __m256i t =
          _mm256_add_epi32(_mm256_add_epi32(iv[0], iv[1]), _mm256_add_epi32(iv[2], iv[3]));
      __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
      t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0x4E));
      t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0xB1));
      sum[b] = _mm_cvtsi128_si32(t4);
    }
    OffsetsAvx2(db, sum + b0, n, s + b0);
  }
}

}  // namespace

void QuantizeQ8Row(Isa isa, const float* x, int64_t k, int8_t* q, float* d, int32_t* sum,
                   float* s) {
  if (isa == Isa::kScalar) {
    QuantizeQ8RowScalar(x, k, q, d, sum, s);
  } else {
    QuantizeQ8RowAvx2(x, k, q, d, sum, s);
  }
}

void BlockIntDots(Isa isa, DType t, const uint8_t* w, const int8_t* q, int64_t nb, int32_t* sums) {
  if (isa == Isa::kScalar) {
    BlockIntDotsScalar(t, w, q, nb, sums);
  } else {
    if (t == DType::kQ4_1) {
      BlockIntDotsAvx2<DType::kQ4_1>(w, q, nb, sums);
    } else if (t == DType::kQ4_0) {
      BlockIntDotsAvx2<DType::kQ4_0>(w, q, nb, sums);
    } else {
      BlockIntDotsAvx2<DType::kQ8_0>(w, q, nb, sums);
    }
  }
}

float QuantDot(Isa isa, DType t, const uint8_t* w, const Q8Row& a, int64_t nb) {
  float out;
  QuantDotRows(isa, t, w, &a, 1, nb, &out);
  return out;
}

void QuantDotRows(Isa isa, DType t, const uint8_t* w, const Q8Row* a, int64_t n_rows, int64_t nb,
                  float* out) {
  // AVX-512 without VNNI shares the AVX2 quantized path.
  if (isa == Isa::kScalar) {
    for (int64_t r = 0; r < n_rows; ++r) out[r] = QuantDotScalar(t, w, a[r], nb);
    return;
  }
  if (isa >= Isa::kAvx512Vnni) {
    QuantDotRowsVnni(t, w, a, n_rows, nb, out);
    return;
  }
  if (t == DType::kQ4_1) {
    RowsAvx2Dispatch<DType::kQ4_1>(w, a, n_rows, nb, out);
  } else if (t == DType::kQ4_0) {
    RowsAvx2Dispatch<DType::kQ4_0>(w, a, n_rows, nb, out);
  } else {
    RowsAvx2Dispatch<DType::kQ8_0>(w, a, n_rows, nb, out);
  }
}

}  // namespace rsd::cpu
