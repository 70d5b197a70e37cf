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

__attribute__((target("avx512f,avx512bw,avx512vl,avx2"))) void BlockIntDotsAvx512(
    DType t, const uint8_t* w, const int8_t* q, int64_t nb, int32_t* sums) {
  const size_t bb = DTypeBlockBytes(t);
  const int off = QsOffset(t);
  const __m512i ones = _mm512_set1_epi16(1);
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    __m256i parts[4];
    for (int pair = 0; pair < 2; ++pair) {
      const int64_t b0 = b + 2 * pair;
      const __m512i act =
          _mm512_loadu_si512(reinterpret_cast<const void*>(q + b0 * kQBlock));  // 2 blocks
      __m512i p16;
      if (t == DType::kQ8_0) {
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + b0 * bb + off));
        const __m256i w1 =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (b0 + 1) * bb + off));
        const __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(w0), w1, 1);
        const __mmask64 neg = _mm512_movepi8_mask(wv);
        const __m512i absw = _mm512_abs_epi8(wv);
        const __m512i sa = _mm512_mask_sub_epi8(act, neg, _mm512_setzero_si512(), act);
        p16 = _mm512_maddubs_epi16(absw, sa);
      } else {
        const __m128i m4 = _mm_set1_epi8(0x0F);
        __m256i nib[2];
        for (int k = 0; k < 2; ++k) {
          const __m128i raw =
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (b0 + k) * bb + off));
          nib[k] = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4),
                                    _mm_and_si128(raw, m4));
        }
        const __m512i nv = _mm512_inserti64x4(_mm512_castsi256_si512(nib[0]), nib[1], 1);
        p16 = _mm512_maddubs_epi16(nv, act);
      }
      const __m512i p32 = _mm512_madd_epi16(p16, ones);
      parts[2 * pair] = _mm512_castsi512_si256(p32);
      parts[2 * pair + 1] = _mm512_extracti64x4_epi64(p32, 1);
    }
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(parts[0], parts[1]),
                                  _mm256_hadd_epi32(parts[2], parts[3]));
    __m128i r = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(sums + b), r);
  }
  if (b < nb) BlockIntDotsScalar(t, w + b * bb, q + b * kQBlock, nb - b, sums + b);
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
  switch (isa) {
    case Isa::kAvx512: return BlockIntDotsAvx512(t, w, q, nb, sums);
    case Isa::kAvx2: return BlockIntDotsAvx2(t, w, q, nb, sums);
    case Isa::kScalar: return BlockIntDotsScalar(t, w, q, nb, sums);
  }
}

float QuantRowDot(DType t, const uint8_t* w, const Q8Row& a, const int32_t* sums, int64_t nb) {
  // Four accumulators, block b into b % 4, folded (0+1)+(2+3): one order for every path.
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  const size_t bb = DTypeBlockBytes(t);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = w + b * bb;
    const float dw = F16ToF32(LoadU16(blk));
    float v;
    if (t == DType::kQ4_1) {
      const float mw = F16ToF32(LoadU16(blk + 2));
      v = (dw * a.d[b]) * static_cast<float>(sums[b]) +
          mw * (a.d[b] * static_cast<float>(a.sum[b]));
    } else if (t == DType::kQ4_0) {
      v = (dw * a.d[b]) * static_cast<float>(sums[b] - 8 * a.sum[b]);
    } else {  // Q8_0
      v = (dw * a.d[b]) * static_cast<float>(sums[b]);
    }
    acc[b & 3] = acc[b & 3] + v;
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

}  // namespace rsd::cpu
