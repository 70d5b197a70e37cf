// Integer block sums for quantized weights (exact, so every ISA path agrees) and the shared float
// combination of blocks.
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/dot_quant_vnni.h"

namespace rsd::cpu {
namespace {

inline uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// Offsets of the nibble/int8 payload inside a block.
constexpr int QsOffset(DType t) { return t == DType::kQ4_1 ? 4 : 2; }

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

// 8 int32 partial sums of one block, as a vector.
__attribute__((target("avx2"))) inline __m256i BlockPartialsAvx2(DType t, const uint8_t* qs,
                                                                  const int8_t* a) {
  const __m256i act = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
  __m256i p16;
  if (t == DType::kQ8_0) {
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs));
    p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(act, wv));
  } else {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(raw, m4);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
    p16 = _mm256_maddubs_epi16(_mm256_set_m128i(hi, lo), act);
  }
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

__attribute__((target("avx2"))) void BlockIntDotsAvx2(DType t, const uint8_t* w, const int8_t* q,
                                                      int64_t nb, int32_t* sums) {
  const size_t bb = DTypeBlockBytes(t);
  const int off = QsOffset(t);
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    __m256i s0 = BlockPartialsAvx2(t, w + (b + 0) * bb + off, q + (b + 0) * kQBlock);
    __m256i s1 = BlockPartialsAvx2(t, w + (b + 1) * bb + off, q + (b + 1) * kQBlock);
    __m256i s2 = BlockPartialsAvx2(t, w + (b + 2) * bb + off, q + (b + 2) * kQBlock);
    __m256i s3 = BlockPartialsAvx2(t, w + (b + 3) * bb + off, q + (b + 3) * kQBlock);
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3));
    __m128i r = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(sums + b), r);
  }
  if (b < nb) BlockIntDotsScalar(t, w + b * bb, q + b * kQBlock, nb - b, sums + b);
}

// The arithmetic every path follows (so every path gives the same bits):
//   for each block b, for each lane j in 0..7: p_j = sum of the four products w_i * q_i with
//   i in [4j, 4j+4) (exact int; Q4_0 uses w_i = nibble - 8), and acc[b % 4][j] += (dw * da) * p_j;
//   Q4_1 also adds mw * s_b into offset lane b % 4;
//   result = Fold8((acc0 + acc1) + (acc2 + acc3)) + ((off0 + off1) + (off2 + off3)),
//   Fold8 = tree j += j+4, j+2, j+1.
// Eight lanes are the AVX2 register layout of maddubs + madd (no horizontal sum per block), and
// four accumulators keep the adds of consecutive blocks independent.
inline int32_t WeightInt(DType t, const uint8_t* qs, int i) {
  if (t == DType::kQ8_0) return static_cast<int8_t>(qs[i]);
  const int nib = i < 16 ? (qs[i] & 0x0F) : (qs[i - 16] >> 4);
  return t == DType::kQ4_0 ? nib - 8 : nib;
}

inline float FoldEight(float* lane) {
  for (int w = 4; w >= 1; w /= 2) {
    for (int j = 0; j < w; ++j) lane[j] = lane[j] + lane[j + w];
  }
  return lane[0];
}

float QuantDotScalar(DType t, const uint8_t* w, const Q8Row& a, int64_t nb) {
  float acc[4][8] = {}, off[4] = {0};
  const size_t bb = DTypeBlockBytes(t);
  const int qo = QsOffset(t);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = w + b * bb;
    const int8_t* q = a.q + b * kQBlock;
    const float scale = F16ToF32(LoadU16(blk)) * a.d[b];
    for (int j = 0; j < 8; ++j) {
      int32_t p = 0;
      for (int i = 4 * j; i < 4 * j + 4; ++i) p += WeightInt(t, blk + qo, i) * q[i];
      acc[b & 3][j] = acc[b & 3][j] + scale * static_cast<float>(p);
    }
    if (t == DType::kQ4_1) off[b & 3] = off[b & 3] + F16ToF32(LoadU16(blk + 2)) * a.s[b];
  }
  float lane[8];
  for (int j = 0; j < 8; ++j) lane[j] = (acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j]);
  return FoldEight(lane) + ((off[0] + off[1]) + (off[2] + off[3]));
}

// Four F16 values at p, p + stride, p + 2 stride, p + 3 stride, as floats.
__attribute__((target("avx2,f16c"))) inline __m128 Load4F16(const uint8_t* p, size_t stride) {
  return _mm_cvtph_ps(_mm_setr_epi16(LoadU16(p), LoadU16(p + stride), LoadU16(p + 2 * stride),
                                     LoadU16(p + 3 * stride), 0, 0, 0, 0));
}

// One block's eight int partial sums for activation `act` against the unpacked weight block.
template <DType T>
__attribute__((target("avx2"))) inline __m256i BlockLanes(__m256i wv, __m256i wraw, __m256i act) {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (T == DType::kQ8_0) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(wv, _mm256_sign_epi8(act, wraw)), ones);
  }
  __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, act), ones);
  if constexpr (T == DType::kQ4_0) {
    p = _mm256_sub_epi32(
        p, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), act), ones));
  }
  return p;
}

template <DType T>
__attribute__((target("avx2"))) inline void UnpackBlock(const uint8_t* qs, __m256i* wv,
                                                        __m256i* wraw) {
  if constexpr (T == DType::kQ8_0) {
    *wraw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs));
    *wv = _mm256_sign_epi8(*wraw, *wraw);
  } else {
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    *wv = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4));
    *wraw = *wv;
  }
}

// One activation row (the decode case): the weight row is read straight from the GGUF blocks.
// Blocks go in groups of four, block b of the group into accumulator b % 4, as the scalar path.
template <DType T>
__attribute__((target("avx2,f16c"))) float QuantDotRowAvx2(const uint8_t* w, const Q8Row& a,
                                                           int64_t nb) {
  constexpr size_t bb = DTypeBlockBytes(T);
  constexpr int qo = QsOffset(T);
  __m256 acc[4];
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) acc[k] = _mm256_setzero_ps();
  __m128 off = _mm_setzero_ps();
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    const uint8_t* blk = w + b * bb;
    alignas(16) float sc[4];
    _mm_store_ps(sc, _mm_mul_ps(Load4F16(blk, bb), _mm_loadu_ps(a.d + b)));
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      __m256i wv, wraw;
      UnpackBlock<T>(blk + k * bb + qo, &wv, &wraw);
      const __m256i act =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + (b + k) * kQBlock));
      acc[k] =
          _mm256_add_ps(acc[k], _mm256_mul_ps(_mm256_broadcast_ss(&sc[k]),
                                              _mm256_cvtepi32_ps(BlockLanes<T>(wv, wraw, act))));
    }
    if constexpr (T == DType::kQ4_1) {
      off = _mm_add_ps(off, _mm_mul_ps(Load4F16(blk + 2, bb), _mm_loadu_ps(a.s + b)));
    }
  }
  alignas(16) float offl[4];
  _mm_store_ps(offl, off);
  for (int64_t c = b; c < nb; ++c) {
    const uint8_t* blk = w + c * bb;
    __m256i wv, wraw;
    UnpackBlock<T>(blk + qo, &wv, &wraw);
    const __m256i act = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + c * kQBlock));
    const float scale = _cvtsh_ss(LoadU16(blk)) * a.d[c];
    acc[c & 3] = _mm256_add_ps(
        acc[c & 3],
        _mm256_mul_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(BlockLanes<T>(wv, wraw, act))));
    if constexpr (T == DType::kQ4_1) {
      offl[c & 3] = offl[c & 3] + _cvtsh_ss(LoadU16(blk + 2)) * a.s[c];
    }
  }
  const __m256 sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
  // Fold8 in registers: j += j+4, then j += j+2, then j += j+1.
  __m128 v = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
  return _mm_cvtss_f32(v) + ((offl[0] + offl[1]) + (offl[2] + offl[3]));
}

// Many activation rows against one weight row. The weight row is unpacked once into a
// thread-local buffer (unsigned magnitudes, plus signs for the signed types, and F32 scales), then
// rows go in tiles of up to four. Within a tile the blocks are walked one accumulator class at a
// time (blocks b = k, k+4, k+8, ... for class k), which is exactly the sequence of additions
// acc[b % 4] receives in QuantDotRowAvx2 and the scalar path, so the bits are the same; only the
// register pressure differs (one accumulator per row instead of four), which lets four rows share
// each unpacked block without spilling.
struct PackedRow {
  std::vector<uint8_t> mag;   // [nb * 32] |w| (the 4-bit types: nibble or |nibble - 8|)
  std::vector<int8_t> sign;   // [nb * 32] w itself, for the signed types (Q8_0, Q4_0)
  std::vector<float> dw, mw;  // [nb] block scale and (Q4_1) block minimum, as F32
  std::vector<float> scale;   // [4 * nb] dw[b] * a[r].d[b] for the rows of one tile
};

template <DType T>
__attribute__((target("avx2,f16c"))) void PackRowAvx2(const uint8_t* w, int64_t nb, PackedRow* p) {
  constexpr size_t bb = DTypeBlockBytes(T);
  constexpr int qo = QsOffset(T);
  p->mag.resize(static_cast<size_t>(nb * kQBlock));
  p->dw.resize(static_cast<size_t>(nb));
  p->mw.resize(static_cast<size_t>(nb));
  p->scale.resize(static_cast<size_t>(4 * nb));
  if constexpr (T != DType::kQ4_1) p->sign.resize(static_cast<size_t>(nb * kQBlock));
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = w + b * bb;
    p->dw[b] = _cvtsh_ss(LoadU16(blk));
    if constexpr (T == DType::kQ4_1) p->mw[b] = _cvtsh_ss(LoadU16(blk + 2));
    __m256i v;
    if constexpr (T == DType::kQ8_0) {
      v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + qo));
    } else {
      const __m128i m4 = _mm_set1_epi8(0x0F);
      const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + qo));
      v = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4));
      if constexpr (T == DType::kQ4_0) v = _mm256_sub_epi8(v, _mm256_set1_epi8(8));
    }
    if constexpr (T == DType::kQ4_1) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p->mag.data() + b * kQBlock), v);
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p->mag.data() + b * kQBlock),
                          _mm256_sign_epi8(v, v));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p->sign.data() + b * kQBlock), v);
    }
  }
}

// Q4_1's offset term of one activation row: (off0 + off1) + (off2 + off3), block b added to
// off[b % 4], as QuantDotScalar sums it.
__attribute__((target("avx2,f16c"))) inline float OffsetSumAvx2(const PackedRow& p, const Q8Row& a,
                                                                int64_t nb) {
  __m128 off = _mm_setzero_ps();
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    off = _mm_add_ps(off, _mm_mul_ps(_mm_loadu_ps(p.mw.data() + b), _mm_loadu_ps(a.s + b)));
  }
  alignas(16) float offl[4];
  _mm_store_ps(offl, off);
  for (; b < nb; ++b) offl[b & 3] = offl[b & 3] + p.mw[b] * a.s[b];
  return (offl[0] + offl[1]) + (offl[2] + offl[3]);
}

// R rows (R <= 4) of the packed weight row. The integer lanes are exact whatever the method
// (|w| * sign(q, w) = w * q, and no int16 sum can saturate: |w| <= 128, |q| <= 127), so they equal
// BlockLanes'; the float operations per row are QuantDotScalar's, in its order.
template <DType T, int R>
__attribute__((target("avx2,f16c"))) void PackedRowsAvx2(PackedRow& p, const Q8Row* a, int64_t nb,
                                                         float* out) {
  constexpr bool kSigned = T != DType::kQ4_1;
  float* sc = p.scale.data();
  for (int r = 0; r < R; ++r) {
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
      _mm256_storeu_ps(sc + r * nb + b, _mm256_mul_ps(_mm256_loadu_ps(p.dw.data() + b),
                                                      _mm256_loadu_ps(a[r].d + b)));
    }
    for (; b < nb; ++b) sc[r * nb + b] = p.dw[b] * a[r].d[b];
  }
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 pair[2][R];  // (acc0 + acc1) and (acc2 + acc3)
  for (int k = 0; k < 4; ++k) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = k; b < nb; b += 4) {
      const __m256i wv =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.mag.data() + b * kQBlock));
      __m256i ws = _mm256_setzero_si256();
      if constexpr (kSigned) {
        ws = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.sign.data() + b * kQBlock));
      }
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        __m256i act = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[r].q + b * kQBlock));
        if constexpr (kSigned) act = _mm256_sign_epi8(act, ws);
        const __m256i lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, act), ones);
        acc[r] = _mm256_add_ps(
            acc[r], _mm256_mul_ps(_mm256_broadcast_ss(sc + r * nb + b), _mm256_cvtepi32_ps(lanes)));
      }
    }
    for (int r = 0; r < R; ++r) {
      if (k % 2 == 0) {
        pair[k / 2][r] = acc[r];
      } else {
        pair[k / 2][r] = _mm256_add_ps(pair[k / 2][r], acc[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    float offsum = 0.0f;
    if constexpr (T == DType::kQ4_1) offsum = OffsetSumAvx2(p, a[r], nb);
    const __m256 sum = _mm256_add_ps(pair[0][r], pair[1][r]);
    __m128 v = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
    out[r] = _mm_cvtss_f32(v) + offsum;
  }
}

template <DType T>
void QuantDotRowsAvx2Dispatch(const uint8_t* w, const Q8Row* a, int64_t n_rows, int64_t nb,
                              float* out) {
  if (n_rows == 1) {
    out[0] = QuantDotRowAvx2<T>(w, a[0], nb);
    return;
  }
  thread_local PackedRow packed;
  PackRowAvx2<T>(w, nb, &packed);
  int64_t r = 0;
  for (; r + 4 <= n_rows; r += 4) PackedRowsAvx2<T, 4>(packed, a + r, nb, out + r);
  switch (n_rows - r) {
    case 3:
      PackedRowsAvx2<T, 3>(packed, a + r, nb, out + r);
      break;
    case 2:
      PackedRowsAvx2<T, 2>(packed, a + r, nb, out + r);
      break;
    case 1:
      PackedRowsAvx2<T, 1>(packed, a + r, nb, out + r);
      break;
    default:
      break;
  }
}

}  // namespace

namespace {

// The scale and offset term of a block from its max |x| and integer sum (shared by both paths).
inline void BlockScale(float amax, int32_t total, float* d, int32_t* sum, float* s) {
  const float db = amax / 127.0f;
  *d = F16ToF32(F32ToF16(db));
  *sum = total;
  *s = F16ToF32(F32ToF16(db * static_cast<float>(total)));
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

// The same operations eight at a time: max of |x| (exact in any order for non-NaN values), the
// same product x * id, round to nearest even (nearbyint's mode), the same clamp, exact int sums.
__attribute__((target("avx2"))) void QuantizeQ8RowAvx2(const float* x, int64_t k, int8_t* q,
                                                       float* d, int32_t* sum, float* s) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < k / kQBlock; ++b) {
    const float* xb = x + b * kQBlock;
    __m256 v[4];
    for (int j = 0; j < 4; ++j) v[j] = _mm256_loadu_ps(xb + 8 * j);
    __m256 m =
        _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                      _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    const float amax = _mm_cvtss_f32(m4);
    const __m256 id = _mm256_set1_ps(InverseScale(amax));
    __m256i iv[4];
    for (int j = 0; j < 4; ++j) {
      __m256 r =
          _mm256_round_ps(_mm256_mul_ps(v[j], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
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
    BlockScale(amax, _mm_cvtsi128_si32(t4), d + b, sum + b, s + b);
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
    BlockIntDotsAvx2(t, w, q, nb, sums);
  }
}

float QuantDot(Isa isa, DType t, const uint8_t* w, const Q8Row& a, int64_t nb) {
  float out;
  QuantDotRows(isa, t, w, &a, 1, nb, &out);
  return out;
}

void QuantDotRows(Isa isa, DType t, const uint8_t* w, const Q8Row* a, int64_t n_rows,
                  int64_t nb, float* out) {
  // AVX-512 without VNNI shares the AVX2 quantized path.
  if (isa == Isa::kScalar) {
    for (int64_t r = 0; r < n_rows; ++r) out[r] = QuantDotScalar(t, w, a[r], nb);
    return;
  }
  if (isa == Isa::kAvx512Vnni) {
    QuantDotRowsVnni(t, w, a, n_rows, nb, out);
    return;
  }
  if (t == DType::kQ4_1) {
    QuantDotRowsAvx2Dispatch<DType::kQ4_1>(w, a, n_rows, nb, out);
  } else if (t == DType::kQ4_0) {
    QuantDotRowsAvx2Dispatch<DType::kQ4_0>(w, a, n_rows, nb, out);
  } else {
    QuantDotRowsAvx2Dispatch<DType::kQ8_0>(w, a, n_rows, nb, out);
  }
}

}  // namespace rsd::cpu
