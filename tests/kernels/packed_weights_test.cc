// The AVX-512 VNNI path's packed weight layout (kernels/cpu/packed_weights.h): packing loses no
// byte, and matmuls and embedding lookups over packed weights give the scalar path's bits over
// the file's rows, for every quantized dtype, row count (whole groups and a tail), block count
// (classes of unequal length) and activation row count (full tiles and every remainder).
#include "kernels/cpu/packed_weights.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/half.h"
#include "tests/kernels/random_data.h"

namespace rsd::cpu {
namespace {

using testing::RandomFloats;
using testing::RandomWeights;

constexpr DType kQuantized[] = {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0};

TEST(PackedWeights, BlockOrderIsAPermutationByClass) {
  for (int64_t nb : {1, 2, 3, 4, 5, 7, 18, 48}) {
    std::vector<int> seen(nb, 0);
    int64_t prev = -1;
    for (int64_t c = 0; c < 4; ++c) {
      for (int64_t b = c; b < nb; b += 4) {
        const int64_t i = PackedBlockIndex(b, nb);
        ASSERT_GE(i, 0);
        ASSERT_LT(i, nb);
        EXPECT_EQ(i, prev + 1) << "class " << c << " block " << b << " of " << nb;
        prev = i;
        seen[i]++;
      }
    }
    for (int64_t i = 0; i < nb; ++i) EXPECT_EQ(seen[i], 1);
  }
}

TEST(PackedWeights, UnpackingGivesBackEveryRowOfTheFile) {
  std::mt19937 rng(3);
  for (DType t : kQuantized) {
    for (int64_t rows : {16, 37, 48}) {
      for (int64_t cols : {32, 96, 160, 576}) {
        const auto src = RandomWeights(rng, t, rows, cols);
        std::vector<uint8_t> packed(src.size(), 0xAA), row(DTypeRowBytes(t, cols));
        PackWeights(t, src.data(), rows, cols, packed.data());
        EXPECT_NE(0, std::memcmp(packed.data(), src.data(), DTypeRowBytes(t, cols) * 16))
            << "the first group is rearranged";
        for (int64_t r = 0; r < rows; ++r) {
          UnpackWeightRow(t, packed.data(), rows, cols, r, row.data());
          ASSERT_EQ(0, std::memcmp(row.data(), src.data() + r * row.size(), row.size()))
              << DTypeName(t) << " " << rows << "x" << cols << " row " << r;
        }
      }
    }
  }
}

// The packed backends' matmuls (VNNI, and AMX where the CPU has it: tiles of 16 activation rows
// and the VNNI kernel for the rest) against the scalar backend's over the file's rows, bit for bit.
void ExpectPackedMatMulsGiveScalarBits(Isa isa) {
  std::mt19937 rng(7);
  CpuBackend scalar(1, Isa::kScalar);
  for (DType t : kQuantized) {
    for (int64_t m : {16, 37, 64}) {
      for (int64_t k : {32, 96, 160, 576}) {
        const auto src = RandomWeights(rng, t, m, k);
        const auto bias = RandomFloats(rng, m, 0.5f);
        for (int threads : {1, 2}) {
          CpuBackend vnni(threads, isa);
          std::vector<uint8_t> dev(src.size());
          Tensor w{dev.data(), t, m, k};
          ASSERT_TRUE(vnni.UploadWeight(src.data(), &w).ok());
          ASSERT_EQ(w.layout, WeightLayout::kPacked16);
          for (int64_t n : {1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 32, 37, 48}) {
            auto x = RandomFloats(rng, n * k, 2.0f);
            for (int64_t i = 0; i < k; ++i) x[i] = 0.0f;  // an all-zero row: scales of zero
            for (const float* b : {static_cast<const float*>(nullptr), bias.data()}) {
              std::vector<float> want(n * m, NAN), got(n * m, NAN);
              ASSERT_TRUE(scalar
                              .MatMul(Tensor{x.data(), DType::kF32, n, k},
                                      Tensor{const_cast<uint8_t*>(src.data()), t, m, k}, b,
                                      Tensor{want.data(), DType::kF32, n, m})
                              .ok());
              ASSERT_TRUE(vnni.MatMul(Tensor{x.data(), DType::kF32, n, k}, w, b,
                                      Tensor{got.data(), DType::kF32, n, m})
                              .ok());
              ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * 4))
                  << IsaName(isa) << " " << DTypeName(t) << " m=" << m << " k=" << k << " n=" << n
                  << " threads=" << threads << (b ? " bias" : "");
            }
          }
        }
      }
    }
  }
}

TEST(PackedWeights, VnniMatMulGivesTheScalarBitsForEveryShape) {
  if (!IsaSupported(Isa::kAvx512Vnni)) GTEST_SKIP() << "no AVX-512 VNNI here";
  ExpectPackedMatMulsGiveScalarBits(Isa::kAvx512Vnni);
}

TEST(PackedWeights, AmxMatMulGivesTheScalarBitsForEveryShape) {
  if (!IsaSupported(Isa::kAmx)) GTEST_SKIP() << "no AMX-INT8 here";
  ExpectPackedMatMulsGiveScalarBits(Isa::kAmx);
}

TEST(PackedWeights, EmbedReadsPackedRowsAsTheFileRows) {
  if (!IsaSupported(Isa::kAvx512Vnni)) GTEST_SKIP() << "no AVX-512 VNNI here";
  std::mt19937 rng(9);
  CpuBackend scalar(1, Isa::kScalar), vnni(2, Isa::kAvx512Vnni);
  const int64_t vocab = 53, d = 96;
  const int32_t ids[] = {0, 15, 16, 52, 31, 48, 7};
  const int64_t n = sizeof(ids) / sizeof(ids[0]);
  for (DType t : kQuantized) {
    const auto src = RandomWeights(rng, t, vocab, d);
    std::vector<uint8_t> dev(src.size());
    Tensor table{dev.data(), t, vocab, d};
    ASSERT_TRUE(vnni.UploadWeight(src.data(), &table).ok());
    ASSERT_EQ(table.layout, WeightLayout::kPacked16);
    std::vector<float> want(n * d), got(n * d);
    ASSERT_TRUE(scalar
                    .Embed(Tensor{const_cast<uint8_t*>(src.data()), t, vocab, d}, ids,
                           Tensor{want.data(), DType::kF32, n, d})
                    .ok());
    ASSERT_TRUE(vnni.Embed(table, ids, Tensor{got.data(), DType::kF32, n, d}).ok());
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * 4)) << DTypeName(t);
  }
}

TEST(PackedWeights, OtherPathsAndTypesKeepTheFileRows) {
  std::mt19937 rng(1);
  const auto src = RandomWeights(rng, DType::kQ4_1, 32, 64);
  std::vector<uint8_t> dev(src.size());
  for (Isa isa : {Isa::kScalar, Isa::kAvx2}) {
    if (!IsaSupported(isa)) continue;
    CpuBackend be(1, isa);
    Tensor w{dev.data(), DType::kQ4_1, 32, 64};
    ASSERT_TRUE(be.UploadWeight(src.data(), &w).ok());
    EXPECT_EQ(w.layout, WeightLayout::kRows);
    EXPECT_EQ(0, std::memcmp(dev.data(), src.data(), src.size()));
  }
  if (!IsaSupported(Isa::kAvx512Vnni)) return;
  CpuBackend vnni(1, Isa::kAvx512Vnni);
  const auto f = RandomFloats(rng, 32 * 64, 1.0f);
  std::vector<float> fdev(f.size());
  Tensor wf{fdev.data(), DType::kF32, 32, 64};
  ASSERT_TRUE(vnni.UploadWeight(f.data(), &wf).ok());
  EXPECT_EQ(wf.layout, WeightLayout::kRows);
  Tensor small{dev.data(), DType::kQ4_1, 15, 64};  // fewer rows than a group
  ASSERT_TRUE(vnni.UploadWeight(src.data(), &small).ok());
  EXPECT_EQ(small.layout, WeightLayout::kRows);
}

}  // namespace
}  // namespace rsd::cpu
