// Integer block sums for quantized weights (exact, so every ISA path agrees) and the shared float
// combination of blocks.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels/cpu/dot.h"

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

// One block's float contribution from its exact integer sum: the single formula every path uses.
inline float BlockValue(DType t, float dw, float mw, float da, int32_t sumi, int32_t qsum) {
  if (t == DType::kQ4_1) {
    return (dw * da) * static_cast<float>(sumi) + mw * (da * static_cast<float>(qsum));
  }
  if (t == DType::kQ4_0) return (dw * da) * static_cast<float>(sumi - 8 * qsum);
  return (dw * da) * static_cast<float>(sumi);  // Q8_0
}

// Four accumulators, block b into b % 4, folded (0+1)+(2+3): one order for every path.
float QuantDotScalar(DType t, const uint8_t* w, const Q8Row& a, int64_t nb) {
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  const size_t bb = DTypeBlockBytes(t);
  int32_t sum;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = w + b * bb;
    BlockIntDotsScalar(t, blk, a.q + b * kQBlock, 1, &sum);
    const float mw = t == DType::kQ4_1 ? F16ToF32(LoadU16(blk + 2)) : 0.0f;
    acc[b & 3] = acc[b & 3] + BlockValue(t, F16ToF32(LoadU16(blk)), mw, a.d[b], sum, a.sum[b]);
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// The same arithmetic with the four accumulators as the four lanes of one SSE register.
__attribute__((target("avx2,f16c"))) float QuantDotAvx2(DType t, const uint8_t* w,
                                                         const Q8Row& a, int64_t nb) {
  const size_t bb = DTypeBlockBytes(t);
  const int off = QsOffset(t);
  __m128 acc = _mm_setzero_ps();
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    const uint8_t* blk = w + b * bb;
    __m256i s0 = BlockPartialsAvx2(t, blk + off, a.q + (b + 0) * kQBlock);
    __m256i s1 = BlockPartialsAvx2(t, blk + bb + off, a.q + (b + 1) * kQBlock);
    __m256i s2 = BlockPartialsAvx2(t, blk + 2 * bb + off, a.q + (b + 2) * kQBlock);
    __m256i s3 = BlockPartialsAvx2(t, blk + 3 * bb + off, a.q + (b + 3) * kQBlock);
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3));
    __m128i sumi = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    const __m128i dh = _mm_setr_epi16(LoadU16(blk), LoadU16(blk + bb), LoadU16(blk + 2 * bb),
                                      LoadU16(blk + 3 * bb), 0, 0, 0, 0);
    const __m128 dw = _mm_cvtph_ps(dh);
    const __m128 da = _mm_loadu_ps(a.d + b);
    const __m128i qsum = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a.sum + b));
    __m128 v;
    if (t == DType::kQ4_1) {
      const __m128i mh = _mm_setr_epi16(LoadU16(blk + 2), LoadU16(blk + bb + 2),
                                        LoadU16(blk + 2 * bb + 2), LoadU16(blk + 3 * bb + 2), 0,
                                        0, 0, 0);
      const __m128 mw = _mm_cvtph_ps(mh);
      v = _mm_add_ps(_mm_mul_ps(_mm_mul_ps(dw, da), _mm_cvtepi32_ps(sumi)),
                     _mm_mul_ps(mw, _mm_mul_ps(da, _mm_cvtepi32_ps(qsum))));
    } else if (t == DType::kQ4_0) {
      const __m128i corr = _mm_sub_epi32(sumi, _mm_slli_epi32(qsum, 3));
      v = _mm_mul_ps(_mm_mul_ps(dw, da), _mm_cvtepi32_ps(corr));
    } else {
      v = _mm_mul_ps(_mm_mul_ps(dw, da), _mm_cvtepi32_ps(sumi));
    }
    acc = _mm_add_ps(acc, v);
  }
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, acc);
  for (; b < nb; ++b) {
    const uint8_t* blk = w + b * bb;
    const __m256i p = BlockPartialsAvx2(t, blk + off, a.q + b * kQBlock);
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    s4 = _mm_hadd_epi32(s4, s4);
    s4 = _mm_hadd_epi32(s4, s4);
    const int32_t sum = _mm_cvtsi128_si32(s4);
    const float mw = t == DType::kQ4_1 ? _cvtsh_ss(LoadU16(blk + 2)) : 0.0f;
    lanes[b & 3] = lanes[b & 3] + BlockValue(t, _cvtsh_ss(LoadU16(blk)), mw, a.d[b], sum, a.sum[b]);
  }
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

}  // namespace

void QuantizeQ8Row(const float* x, int64_t k, int8_t* q, float* d, int32_t* sum) {
  for (int64_t b = 0; b < k / kQBlock; ++b) {
    const float* xb = x + b * kQBlock;
    float amax = 0.0f;
    for (int i = 0; i < kQBlock; ++i) amax = std::fmax(amax, std::fabs(xb[i]));
    const float db = amax / 127.0f;
    const float id = db != 0.0f ? 1.0f / db : 0.0f;
    int32_t s = 0;
    for (int i = 0; i < kQBlock; ++i) {
      float v = std::nearbyint(xb[i] * id);
      v = std::fmin(127.0f, std::fmax(-127.0f, v));
      q[b * kQBlock + i] = static_cast<int8_t>(v);
      s += static_cast<int32_t>(v);
    }
    d[b] = db;
    sum[b] = s;
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
  // AVX-512 shares the AVX2 quantized path: these dots are memory-bound on one 32-value block.
  return isa == Isa::kScalar ? QuantDotScalar(t, w, a, nb) : QuantDotAvx2(t, w, a, nb);
}

}  // namespace rsd::cpu
