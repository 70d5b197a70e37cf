// Kernel-level checks: every ISA path gives the same bits; values match float64 references.
#include "kernels/cpu/dot.h"

// GCC 12's AVX-512 headers pass an uninitialized `_mm512_undefined_*` value as the unused
// pass-through operand of unmasked intrinsics (GCC bug 105593); the operand is never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/exp.h"
#include "kernels/cpu/isa.h"
#include "kernels/dtype.h"
#include "tests/kernels/random_data.h"

namespace rsd::cpu {
namespace {

using testing::RandomFloats;
using testing::RandomWeights;

__attribute__((target("f16c"))) float HwF16ToF32(uint16_t h) { return _cvtsh_ss(h); }
__attribute__((target("f16c"))) uint16_t HwF32ToF16(float f) {
  return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni, Isa::kAmx}) {
    if (IsaSupported(isa)) {
      out.push_back(isa);
    } else {
      std::printf("[ note ] ISA path %s not supported on this CPU: not exercised here\n",
                  IsaName(isa));
    }
  }
  return out;
}

TEST(DotF32, AllIsaPathsAgreeBitForBitAndMatchFloat64) {
  std::mt19937 rng(1);
  for (int64_t n : {1, 7, 15, 16, 17, 31, 64, 100, 576, 1537}) {
    auto a = RandomFloats(rng, n, 2.0f), b = RandomFloats(rng, n, 2.0f);
    const float ref_scalar = DotF32(Isa::kScalar, a.data(), b.data(), n);
    double ref = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      ref += static_cast<double>(a[i]) * b[i];
      mag += std::fabs(static_cast<double>(a[i]) * b[i]);
    }
    EXPECT_NEAR(ref_scalar, ref, 1e-6 * mag + 1e-30) << "n=" << n;
    for (Isa isa : SupportedIsas()) {
      const float got = DotF32(isa, a.data(), b.data(), n);
      EXPECT_EQ(0, std::memcmp(&got, &ref_scalar, 4)) << IsaName(isa) << " n=" << n;
    }
  }
}

// Dequantizes with ggml's reference formulas, written out here independently of the kernels.
std::vector<double> DequantReference(DType t, const uint8_t* row, int64_t k) {
  std::vector<double> out(k);
  for (int64_t b = 0; b < k / 32; ++b) {
    const uint8_t* blk = row + b * DTypeBlockBytes(t);
    uint16_t dh, mh = 0;
    std::memcpy(&dh, blk, 2);
    const double d = F16ToF32(dh);  // checked against F16C below
    if (t == DType::kQ8_0) {
      for (int i = 0; i < 32; ++i) out[b * 32 + i] = d * static_cast<int8_t>(blk[2 + i]);
    } else if (t == DType::kQ4_0) {
      for (int i = 0; i < 16; ++i) {
        out[b * 32 + i] = d * ((blk[2 + i] & 15) - 8);
        out[b * 32 + i + 16] = d * ((blk[2 + i] >> 4) - 8);
      }
    } else {
      std::memcpy(&mh, blk + 2, 2);
      const double m = F16ToF32(mh);
      for (int i = 0; i < 16; ++i) {
        out[b * 32 + i] = d * (blk[4 + i] & 15) + m;
        out[b * 32 + i + 16] = d * (blk[4 + i] >> 4) + m;
      }
    }
  }
  return out;
}

TEST(QuantDot, AllIsaPathsAgreeAndMatchDequantizedFloat64) {
  std::mt19937 rng(2);
  for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1}) {
    for (int64_t k : {32, 96, 160, 576, 1536}) {
      const int64_t nb = k / 32;
      auto w = RandomWeights(rng, t, 1, k);
      auto x = RandomFloats(rng, k, 3.0f);
      std::vector<int8_t> q(k);
      std::vector<float> d(nb);
      std::vector<int32_t> s(nb);
      std::vector<float> sd(nb);
      QuantizeQ8Row(Isa::kScalar, x.data(), k, q.data(), d.data(), s.data(), sd.data());
      std::vector<int32_t> sums_ref(nb);
      BlockIntDots(Isa::kScalar, t, w.data(), q.data(), nb, sums_ref.data());
      Q8Row a{q.data(), d.data(), s.data(), sd.data()};
      const float got_scalar = QuantDot(Isa::kScalar, t, w.data(), a, nb);
      for (Isa isa : SupportedIsas()) {
        std::vector<int32_t> sums(nb, -12345);
        BlockIntDots(isa, t, w.data(), q.data(), nb, sums.data());
        EXPECT_EQ(sums, sums_ref) << IsaName(isa) << " " << DTypeName(t) << " k=" << k;
        const float got = QuantDot(isa, t, w.data(), a, nb);
        EXPECT_EQ(0, std::memcmp(&got, &got_scalar, 4)) << IsaName(isa) << " k=" << k;
      }
      // Against float64 with the activation as the kernel quantized it (q * d per value; for Q4_1
      // the offset term uses the stored s = F16(d * sum q), as llama.cpp's Q8_1 does).
      auto wd = DequantReference(t, w.data(), k);
      double exact = 0, mag = 0;
      for (int64_t i = 0; i < k; ++i) {
        double wv = wd[i];
        if (t == DType::kQ4_1) {
          uint16_t mh;
          std::memcpy(&mh, w.data() + (i / 32) * 20 + 2, 2);
          wv -= F16ToF32(mh);  // the offset m is applied once per block below
        }
        exact += wv * (static_cast<double>(q[i]) * d[i / 32]);
        mag += std::fabs(wd[i] * x[i]);
      }
      if (t == DType::kQ4_1) {
        for (int64_t b = 0; b < nb; ++b) {
          uint16_t mh;
          std::memcpy(&mh, w.data() + b * 20 + 2, 2);
          exact += static_cast<double>(F16ToF32(mh)) * sd[b];
        }
      }
      EXPECT_NEAR(got_scalar, exact, 1e-5 * mag + 1e-6) << DTypeName(t) << " k=" << k;
    }
  }
}

// Many activation rows against one weight row (the GEMM path: on VNNI, rows in tiles of four, up to
// sixteen per pass, with and without rows prepared in advance) gives each row the bits of the
// scalar single-row dot, for every row count (full tiles and every remainder) and block count.
TEST(QuantDot, ManyRowsEqualEachRowAloneOnEveryPath) {
  std::mt19937 rng(7);
  for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1}) {
    for (int64_t k : {32, 96, 160, 576, 1536}) {
      const int64_t nb = k / 32;
      auto w = RandomWeights(rng, t, 1, k);
      const int max_rows = 19;
      std::vector<int8_t> q(max_rows * k);
      std::vector<float> d(max_rows * nb), sd(max_rows * nb);
      std::vector<int32_t> s(max_rows * nb);
      std::vector<Q8Row> rows;
      for (int r = 0; r < max_rows; ++r) {
        auto x = RandomFloats(rng, k, 3.0f);
        if (r == 3) std::fill(x.begin(), x.end(), 0.0f);  // an all-zero row too
        QuantizeQ8Row(Isa::kScalar, x.data(), k, q.data() + r * k, d.data() + r * nb,
                      s.data() + r * nb, sd.data() + r * nb);
        rows.push_back(
            Q8Row{q.data() + r * k, d.data() + r * nb, s.data() + r * nb, sd.data() + r * nb});
      }
      std::vector<float> alone(max_rows);
      for (int r = 0; r < max_rows; ++r)
        alone[r] = QuantDot(Isa::kScalar, t, w.data(), rows[r], nb);
      for (Isa isa : SupportedIsas()) {
        for (int n = 1; n <= max_rows; ++n) {
          std::vector<float> got(n, NAN);
          QuantDotRows(isa, t, w.data(), rows.data(), n, nb, got.data());
          EXPECT_EQ(0, std::memcmp(got.data(), alone.data(), n * 4))
              << IsaName(isa) << " " << DTypeName(t) << " k=" << k << " rows=" << n;
        }
      }
    }
  }
}

// The elementwise updates attention uses (V accumulation, chunk merge) give the scalar bits on
// every path, for lengths with and without a vector tail.
TEST(ElementwiseF32, AxpyAndScaleAddAgreeOnEveryPath) {
  std::mt19937 rng(8);
  for (int64_t n : {1, 7, 8, 13, 64, 100}) {
    auto x = RandomFloats(rng, n, 3.0f), y0 = RandomFloats(rng, n, 3.0f);
    std::vector<float> axpy_ref = y0, scale_ref = y0;
    AxpyF32(Isa::kScalar, axpy_ref.data(), 0.37f, x.data(), n);
    ScaleAddF32(Isa::kScalar, scale_ref.data(), 0.61f, x.data(), 1.7f, n);
    for (int64_t i = 0; i < n; ++i) {
      const float want = std::fma(0.37f, x[i], y0[i]);  // one rounding (kernel version 3)
      EXPECT_EQ(0, std::memcmp(&axpy_ref[i], &want, 4)) << i;
    }
    for (Isa isa : SupportedIsas()) {
      std::vector<float> axpy = y0, scale = y0;
      AxpyF32(isa, axpy.data(), 0.37f, x.data(), n);
      ScaleAddF32(isa, scale.data(), 0.61f, x.data(), 1.7f, n);
      EXPECT_EQ(0, std::memcmp(axpy.data(), axpy_ref.data(), n * 4)) << IsaName(isa) << " n=" << n;
      EXPECT_EQ(0, std::memcmp(scale.data(), scale_ref.data(), n * 4))
          << IsaName(isa) << " n=" << n;
    }
  }
}

// F16 rows (as the hot K/V pool holds them) and the same rows converted to F32.
void RandomHalfRows(std::mt19937& rng, size_t n, float scale, std::vector<uint16_t>* h,
                    std::vector<float>* f) {
  h->clear();
  f->clear();
  for (float x : RandomFloats(rng, n, scale)) {
    h->push_back(F32ToF16(x));
    f->push_back(F16ToF32(h->back()));
  }
}

// Attention's scores of a chunk's F16 keys at once equal one DotF32 each of the converted keys,
// bit for bit, on every path (the AVX-512 path folds sixteen sums together, a full chunk of 16
// in registers), with keys beyond n left alone.
TEST(DotF32, ManyOverF16KeysEqualsOneAtATimeOnEveryPath) {
  std::mt19937 rng(10);
  for (int64_t d : {16, 48, 64, 128, 7, 100}) {
    for (int n : {1, 5, 15, 16}) {
      const int64_t stride = d + 16;
      auto a = RandomFloats(rng, d, 2.0f);
      std::vector<uint16_t> b;
      std::vector<float> bf;
      RandomHalfRows(rng, n * stride, 2.0f, &b, &bf);
      for (Isa isa : SupportedIsas()) {
        std::vector<float> got(17, -7.0f);
        DotF32Many(isa, a.data(), b.data(), stride, n, d, got.data());
        for (int j = 0; j < n; ++j) {
          const float want = DotF32(isa, a.data(), bf.data() + j * stride, d);
          EXPECT_EQ(0, std::memcmp(&got[j], &want, 4))
              << IsaName(isa) << " d=" << d << " n=" << n << " key " << j;
        }
        EXPECT_EQ(got[n], -7.0f);  // nothing written past n
      }
    }
  }
}

// The fused V accumulation attention uses (F16 rows of V) equals AxpyF32 of the converted rows
// row after row, bit for bit, on every path, for widths with and without 64-, 32- and 8-wide slabs
// and a scalar tail.
TEST(ElementwiseF32, WeightedSumOverF16RowsIsAxpyRowAfterRow) {
  std::mt19937 rng(9);
  for (int64_t d : {1, 7, 8, 31, 32, 40, 64, 100, 128}) {
    for (int n : {0, 1, 5, 16}) {
      const int64_t stride = d + 3;  // rows of a wider matrix, as V's heads are
      std::vector<uint16_t> x;
      std::vector<float> xf;
      RandomHalfRows(rng, std::max<int64_t>(1, n * stride), 3.0f, &x, &xf);
      auto w = RandomFloats(rng, std::max(1, n), 1.0f), y0 = RandomFloats(rng, d, 3.0f);
      std::vector<float> want = y0;
      for (int j = 0; j < n; ++j)
        AxpyF32(Isa::kScalar, want.data(), w[j], xf.data() + j * stride, d);
      for (Isa isa : SupportedIsas()) {
        std::vector<float> got = y0;
        WeightedSumF32(isa, got.data(), w.data(), x.data(), stride, n, d);
        EXPECT_EQ(0, std::memcmp(got.data(), want.data(), d * 4))
            << IsaName(isa) << " d=" << d << " n=" << n;
      }
    }
  }
}

// The query heads that share a key/value head, scored against the same keys and weighting the
// same V rows together, get the bits of one DotF32Many / WeightedSumF32 call each, on every path
// and group size (the AVX-512 paths take heads three or four at a time, then the rest).
TEST(DotF32, GroupedHeadsEqualOneHeadAtATimeOnEveryPath) {
  std::mt19937 rng(11);
  for (int64_t d : {16, 64, 100, 128}) {
    for (int n : {1, 7, 16}) {
      for (int g : {1, 2, 3, 4, 5, 7, 8}) {
        const int64_t stride = d + 32, a_stride = d + 5, out_stride = 19;
        auto a = RandomFloats(rng, g * a_stride, 2.0f), w = RandomFloats(rng, g * out_stride, 1.0f);
        auto y0 = RandomFloats(rng, g * a_stride, 3.0f);
        std::vector<uint16_t> b;
        std::vector<float> bf;
        RandomHalfRows(rng, n * stride, 2.0f, &b, &bf);
        for (Isa isa : SupportedIsas()) {
          std::vector<float> got(g * out_stride, -7.0f), want(got.size(), -7.0f);
          DotF32ManyGroup(isa, a.data(), a_stride, g, b.data(), stride, n, d, got.data(),
                          out_stride);
          std::vector<float> ygot = y0, ywant = y0;
          WeightedSumF32Group(isa, ygot.data(), a_stride, w.data(), out_stride, g, b.data(), stride,
                              n, d);
          for (int h = 0; h < g; ++h) {
            DotF32Many(isa, a.data() + h * a_stride, b.data(), stride, n, d,
                       want.data() + h * out_stride);
            WeightedSumF32(isa, ywant.data() + h * a_stride, w.data() + h * out_stride, b.data(),
                           stride, n, d);
          }
          EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * 4))
              << IsaName(isa) << " d=" << d << " n=" << n << " g=" << g;
          EXPECT_EQ(0, std::memcmp(ygot.data(), ywant.data(), ygot.size() * 4))
              << IsaName(isa) << " d=" << d << " n=" << n << " g=" << g;
        }
      }
    }
  }
}

TEST(QuantizeQ8, RoundsToNearestWithinHalfStep) {
  std::mt19937 rng(3);
  auto x = RandomFloats(rng, 64, 5.0f);
  x[5] = 0.0f;
  std::vector<int8_t> q(64);
  std::vector<float> d(2);
  std::vector<int32_t> s(2);
  std::vector<float> sd(2);
  QuantizeQ8Row(Isa::kScalar, x.data(), 64, q.data(), d.data(), s.data(), sd.data());
  for (int i = 0; i < 64; ++i) {
    // Half a step, plus the F16 rounding of the scale (relative 2^-11) over up to 127 steps.
    EXPECT_LE(std::fabs(q[i] * d[i / 32] - x[i]), d[i / 32] * (0.5f + 127.0f / 2048.0f));
  }
  int32_t s0 = 0;
  for (int i = 0; i < 32; ++i) s0 += q[i];
  EXPECT_EQ(s[0], s0);
}

// Every path quantizes to the same bytes, scales and sums, ties and clamps included.
TEST(QuantizeQ8, AllIsaPathsAgreeBitForBit) {
  std::mt19937 rng(9);
  // 85 blocks: vector paths take the blocks' scales eight at a time in runs of 64 (a whole run,
  // then 21 = two vectors and a tail of five).
  constexpr int64_t nb = 85, k = 32 * nb;
  // Scales from ordinary through F16-subnormal block scales (1e-3), scales that underflow F16
  // (1e-6), to offsets d * sum that overflow it (3e3).
  const float scales[] = {5.0f, 1e-3f, 1e-6f, 3e3f};
  for (int trial = 0; trial < 20; ++trial) {
    auto x = RandomFloats(rng, k, scales[trial % 4]);
    for (int b = 0; b < nb; b += 3) std::fill(x.begin() + b * 32, x.begin() + b * 32 + 32, 0.0f);
    // Exact ties: a block whose max is 127 quantizes x.5 values to the even neighbour.
    for (int i = 0; i < 32; ++i) x[32 + i] = i == 0 ? 127.0f : static_cast<float>(i % 9) - 4.5f;
    x[64] = -1e30f;  // one huge value in its block
    std::vector<int8_t> q_ref(k), q(k);
    std::vector<float> d_ref(nb), s_ref(nb), d(nb), s(nb);
    std::vector<int32_t> sum_ref(nb), sum(nb);
    QuantizeQ8Row(Isa::kScalar, x.data(), k, q_ref.data(), d_ref.data(), sum_ref.data(),
                  s_ref.data());
    for (Isa isa : SupportedIsas()) {
      QuantizeQ8Row(isa, x.data(), k, q.data(), d.data(), sum.data(), s.data());
      EXPECT_EQ(q, q_ref) << IsaName(isa);
      EXPECT_EQ(sum, sum_ref) << IsaName(isa);
      EXPECT_EQ(0, std::memcmp(d.data(), d_ref.data(), nb * 4)) << IsaName(isa);
      EXPECT_EQ(0, std::memcmp(s.data(), s_ref.data(), nb * 4)) << IsaName(isa);
    }
    EXPECT_EQ(q_ref[32 + 1], -4);  // -3.5 -> -4 (even)
    EXPECT_EQ(q_ref[32 + 2], -2);  // -2.5 -> -2
    if (trial % 4 == 1) {          // the small scales did reach F16 subnormals
      EXPECT_TRUE(std::any_of(d_ref.begin(), d_ref.end(),
                              [](float v) { return v != 0.0f && v < 6.1e-5f; }));
    }
    if (trial % 4 == 3) {  // and the large ones an offset F16 cannot hold
      EXPECT_TRUE(std::any_of(s_ref.begin(), s_ref.end(), [](float v) { return std::isinf(v); }));
    }
  }
}

TEST(Exp, MatchesFloat64WithinThreeUlp) {
  for (float x = -87.0f; x < 88.0f; x += 0.0137f) {
    const double ref = std::exp(static_cast<double>(x));
    const float got = Exp(x);
    EXPECT_NEAR(got, ref, 3.0 * ref * 1.1920929e-07) << x;
  }
  EXPECT_EQ(Exp(-100.0f), 0.0f);
  EXPECT_TRUE(std::isinf(Exp(100.0f)));
  EXPECT_EQ(Exp(0.0f), 1.0f);
}

// Exp8 (AVX2) and Exp16 (AVX-512) against the scalar Exp, bit for bit, over the whole range, its
// cut-offs and the special values.
__attribute__((target("avx2"))) void Exp8Into(const float* x, float* out) {
  _mm256_storeu_ps(out, Exp8(_mm256_loadu_ps(x)));
}
__attribute__((target("avx512f"))) void Exp16Into(const float* x, float* out) {
  _mm512_storeu_ps(out, Exp16(_mm512_loadu_ps(x)));
}

TEST(Exp, VectorPathsGiveTheScalarBits) {
  std::vector<float> xs = {0.0f,    -0.0f, NAN,     -NAN,     INFINITY, -INFINITY,
                           -87.3f,  88.0f, 88.001f, -87.301f, -126.0f,  1e-30f,
                           -1e-30f, 0.5f,  -0.5f,   87.99f,   -87.29f,  1e30f};
  for (float x = -100.0f; x < 100.0f; x += 0.0173f) xs.push_back(x);
  while (xs.size() % 16 != 0) xs.push_back(1.0f);
  std::vector<float> want(xs.size()), got(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) want[i] = Exp(xs[i]);
  if (IsaSupported(Isa::kAvx2)) {
    for (size_t i = 0; i < xs.size(); i += 8) Exp8Into(xs.data() + i, got.data() + i);
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * 4)) << "Exp8";
  }
  if (IsaSupported(Isa::kAvx512)) {
    for (size_t i = 0; i < xs.size(); i += 16) Exp16Into(xs.data() + i, got.data() + i);
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * 4)) << "Exp16";
  }
}

TEST(F16, ConversionsMatchTheHardwareF16C) {
  if (!IsaSupported(Isa::kAvx2)) GTEST_SKIP() << "no F16C on this CPU to compare against";
  for (uint32_t h = 0; h < 65536; ++h) {
    const float mine = F16ToF32(static_cast<uint16_t>(h));
    const float hw = HwF16ToF32(static_cast<uint16_t>(h));
    EXPECT_EQ(0, std::memcmp(&mine, &hw, 4)) << h;  // NaNs too: quiet, payload kept
  }
  std::mt19937 rng(4);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    uint32_t b = bits(rng);
    float f;
    std::memcpy(&f, &b, 4);
    EXPECT_EQ(F32ToF16(f), HwF32ToF16(f)) << std::hex << b;
  }
  for (uint32_t b : {0x7F800001u, 0xFF812345u, 0x7FBFFFFFu, 0x7FC02000u, 0x7F800000u}) {
    float f;  // signalling and quiet NaNs of either sign, and infinity
    std::memcpy(&f, &b, 4);
    EXPECT_EQ(F32ToF16(f), HwF32ToF16(f)) << std::hex << b;
  }
}

TEST(BF16, RoundsToNearestEven) {
  EXPECT_EQ(F32ToBF16(1.0f), 0x3F80);
  float f;
  uint32_t b = 0x3F808000;  // exactly half-way between 0x3F80 and 0x3F81: ties to even (0x3F80)
  std::memcpy(&f, &b, 4);
  EXPECT_EQ(F32ToBF16(f), 0x3F80);
  b = 0x3F818000;  // half-way between 0x3F81 and 0x3F82: to 0x3F82
  std::memcpy(&f, &b, 4);
  EXPECT_EQ(F32ToBF16(f), 0x3F82);
  EXPECT_EQ(BF16ToF32(0x3F80), 1.0f);
}

}  // namespace
}  // namespace rsd::cpu
