// Backend op checks on the CPU backend: thread-count and row-count independence (bit for bit, with
// counters proving the threads ran) and attention against a float64 softmax.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/argmax.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/dot.h"
#include "tests/kernels/random_data.h"

namespace rsd::cpu {
namespace {

using testing::RandomFloats;
using testing::RandomHalves;
using testing::RandomWeights;

TEST(MatMul, SameBitsForAnyThreadCountAndRowCount) {
  std::mt19937 rng(5);
  const int64_t n = 9, k = 576, m = 200;
  auto x = RandomFloats(rng, n * k, 1.5f);
  auto wf = RandomFloats(rng, m * k, 0.1f);
  auto wq = RandomWeights(rng, DType::kQ4_1, m, k);
  auto bias = RandomFloats(rng, m, 0.5f);
  for (DType t : {DType::kF32, DType::kQ4_1}) {
    void* wdata = t == DType::kF32 ? static_cast<void*>(wf.data()) : static_cast<void*>(wq.data());
    Tensor w{wdata, t, m, k};
    std::vector<float> ref;
    for (int threads : {1, 2, 3}) {
      CpuBackend be(threads, DefaultIsa());
      std::vector<float> out(n * m, NAN);
      ASSERT_TRUE(be.MatMul(Tensor{x.data(), DType::kF32, n, k}, w, bias.data(),
                            Tensor{out.data(), DType::kF32, n, m})
                      .ok());
      EXPECT_EQ(be.counters().max_threads_used, threads) << "threads really used";
      if (ref.empty()) {
        ref = out;
      } else {
        EXPECT_EQ(0, std::memcmp(out.data(), ref.data(), out.size() * 4))
            << DTypeName(t) << " threads=" << threads;
      }
      // One row at a time gives the same bits as the 9-row GEMM.
      for (int64_t r = 0; r < n; ++r) {
        std::vector<float> one(m);
        ASSERT_TRUE(be.MatMul(Tensor{x.data() + r * k, DType::kF32, 1, k}, w, bias.data(),
                              Tensor{one.data(), DType::kF32, 1, m})
                        .ok());
        EXPECT_EQ(0, std::memcmp(one.data(), ref.data() + r * m, m * 4)) << "row " << r;
      }
      EXPECT_EQ(be.counters().matmul_max_rows, static_cast<uint64_t>(n));
      EXPECT_EQ(be.counters().matmul_min_rows, 1u);
    }
  }
}

// One input against several weights (q/k/v, gate/up) quantizes it once: every target gets the
// bits of its own MatMul, on every path, for quantized and float weights mixed, with biases.
TEST(MatMul, SharedInputGivesEachMatMulsBits) {
  std::mt19937 rng(21);
  const int64_t k = 576;
  const int64_t ms[] = {200, 64, 48};
  for (int64_t n : {1, 9, 40}) {
    auto x = RandomFloats(rng, n * k, 1.5f);
    std::vector<std::vector<uint8_t>> files, dev;
    std::vector<std::vector<float>> biases;
    auto wf = RandomFloats(rng, ms[2] * k, 0.1f);
    for (int i = 0; i < 2; ++i) {
      files.push_back(RandomWeights(rng, DType::kQ4_1, ms[i], k));
      biases.push_back(RandomFloats(rng, ms[i], 0.5f));
    }
    for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512Vnni, Isa::kAmx}) {
      if (!IsaSupported(isa)) continue;
      CpuBackend be(2, isa);
      std::vector<Tensor> w;
      dev.assign(files.begin(), files.end());
      for (int i = 0; i < 2; ++i) {
        w.push_back(Tensor{dev[i].data(), DType::kQ4_1, ms[i], k});
        ASSERT_TRUE(be.UploadWeight(files[i].data(), &w.back()).ok());
      }
      w.push_back(Tensor{wf.data(), DType::kF32, ms[2], k});
      std::vector<std::vector<float>> shared(3), alone(3);
      std::vector<Backend::MatMulTarget> targets;
      for (int i = 0; i < 3; ++i) {
        shared[i].assign(n * ms[i], NAN);
        alone[i].assign(n * ms[i], NAN);
        targets.push_back(Backend::MatMulTarget{&w[i], i < 2 ? biases[i].data() : nullptr,
                                                Tensor{shared[i].data(), DType::kF32, n, ms[i]}});
      }
      be.ResetCounters();
      ASSERT_TRUE(be.MatMulShared(Tensor{x.data(), DType::kF32, n, k}, targets).ok());
      EXPECT_EQ(be.counters().matmul_calls, 3u);
      for (int i = 0; i < 3; ++i) {
        ASSERT_TRUE(be.MatMul(Tensor{x.data(), DType::kF32, n, k}, w[i], targets[i].bias,
                              Tensor{alone[i].data(), DType::kF32, n, ms[i]})
                        .ok());
        EXPECT_EQ(0, std::memcmp(shared[i].data(), alone[i].data(), shared[i].size() * 4))
            << IsaName(isa) << " target " << i << " rows " << n;
      }
    }
  }
}

// SiluMul's vector path (an eight-wide Exp with the scalar's operations) gives the scalar bits,
// over the whole range, Exp's cut-offs, infinities and NaN included.
TEST(SiluMul, EveryIsaGivesTheScalarBits) {
  std::mt19937 rng(11);
  std::vector<float> g = RandomFloats(rng, 4096, 30.0f), u = RandomFloats(rng, 4096, 2.0f);
  const float edges[] = {0.0f,    -0.0f,    87.3f,     -87.3f, 87.29f,  -88.0f,
                         88.0f,   88.01f,   -88.01f,   100.0f, -100.0f, 1e-30f,
                         -1e-30f, INFINITY, -INFINITY, NAN,    0.5f,    -0.5f};
  for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); ++i) g[i * 7] = edges[i];
  for (size_t i = 3000; i < 3100; ++i) g[i] = -87.3f + 0.01f * static_cast<float>(i - 3000);
  const int64_t rows = 4, cols = 1024;
  std::vector<float> ref(g.size()), out(g.size());
  CpuBackend scalar(1, Isa::kScalar);
  ASSERT_TRUE(scalar
                  .SiluMul(Tensor{g.data(), DType::kF32, rows, cols},
                           Tensor{u.data(), DType::kF32, rows, cols},
                           Tensor{ref.data(), DType::kF32, rows, cols})
                  .ok());
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni, Isa::kAmx}) {
    if (!IsaSupported(isa)) continue;
    CpuBackend be(1, isa);
    ASSERT_TRUE(be.SiluMul(Tensor{g.data(), DType::kF32, rows, cols},
                           Tensor{u.data(), DType::kF32, rows, cols},
                           Tensor{out.data(), DType::kF32, rows, cols})
                    .ok());
    for (size_t i = 0; i < g.size(); ++i) {
      ASSERT_EQ(0, std::memcmp(&out[i], &ref[i], 4))
          << IsaName(isa) << " g=" << g[i] << " at " << i;
    }
  }
}

// Every ISA path gives the scalar path's bits: scores, the chunk's softmax (a 16- or eight-wide
// Exp), the chunks' sums side by side in lanes (batches of eight chunks, and a partial batch), V
// accumulation and the merge of chunks, with a partial last chunk and grouped heads.
TEST(Attention, EveryIsaGivesTheScalarBits) {
  std::mt19937 rng(12);
  const int n_heads = 6, n_kv = 2, hd = 64, bt = 16, layers = 1, layer = 0, n_rows = 4;
  const int kv_dim = n_kv * hd, n_blocks = 20;
  KvPoolView pool{{}, n_blocks, layers, kv_dim, bt};
  std::vector<uint16_t> storage = RandomHalves(rng, pool.block_elements() * n_blocks, 1.5f);
  pool.base = DeviceMemory(storage.data());  // the CPU backend computes in host memory
  std::vector<int32_t> table(n_blocks);
  for (int i = 0; i < n_blocks; ++i) table[i] = (7 * i + 3) % n_blocks;  // blocks out of order
  auto q = RandomFloats(rng, n_rows * n_heads * hd, 2.0f);
  const AttentionRow rows[n_rows] = {
      {table.data(), 300}, {table.data(), 77}, {table.data(), 16}, {table.data(), 5}};
  const AttentionShape shape{n_heads, n_kv, hd, 1.0f / std::sqrt(static_cast<float>(hd))};
  std::vector<float> ref(n_rows * n_heads * hd), out(ref.size());
  CpuBackend scalar(1, Isa::kScalar);
  ASSERT_TRUE(scalar
                  .Attention(Tensor{q.data(), DType::kF32, n_rows, n_heads * hd}, rows, layer,
                             shape, pool, Tensor{ref.data(), DType::kF32, n_rows, n_heads * hd})
                  .ok());
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni, Isa::kAmx}) {
    if (!IsaSupported(isa)) continue;
    CpuBackend be(2, isa);
    ASSERT_TRUE(be.Attention(Tensor{q.data(), DType::kF32, n_rows, n_heads * hd}, rows, layer,
                             shape, pool, Tensor{out.data(), DType::kF32, n_rows, n_heads * hd})
                    .ok());
    EXPECT_EQ(0, std::memcmp(out.data(), ref.data(), ref.size() * 4)) << IsaName(isa);
  }
}

// The chunk maximum's vector path falls back to the key-order walk where a tree could differ: a
// NaN among the scores (the walk skips it; a vector lane could lose its maximum to it), or a
// maximum of zero. Row 0 has a zero query (every score +0); the third chunk holds a NaN key after
// the key with row 2's largest score in the same vector lane. Outputs and per-chunk statistics
// equal the scalar path's on every ISA.
TEST(Attention, ZeroScoresAndNaNKeysGiveTheScalarBits) {
  std::mt19937 rng(14);
  const int n_heads = 2, n_kv = 1, hd = 32, bt = 16, layers = 1, n_rows = 3, n_blocks = 3;
  KvPoolView pool{{}, n_blocks, layers, n_kv * hd, bt};
  std::vector<uint16_t> storage = RandomHalves(rng, pool.block_elements() * n_blocks, 1.0f);
  pool.base = DeviceMemory(storage.data());
  std::vector<int32_t> table = {0, 1, 2};
  auto q = RandomFloats(rng, n_rows * n_heads * hd, 2.0f);
  std::fill(q.begin(), q.begin() + n_heads * hd, 0.0f);  // row 0: every score is +0
  for (int i = 0; i < hd; ++i) {  // key 5 of chunk 2 points along row 2's first head
    pool.K(2, 0).get()[5 * hd + i] = F32ToF16(q[2 * n_heads * hd + i]);
  }
  pool.K(2, 0).get()[13 * hd + 3] = 0x7E01;  // a quiet NaN in key 13: lane 5 again
  const AttentionRow rows[n_rows] = {{table.data(), 40}, {table.data(), 32}, {table.data(), 48}};
  const AttentionShape shape{n_heads, n_kv, hd, 0.125f};
  const Tensor qt{q.data(), DType::kF32, n_rows, n_heads * hd};
  const int items = n_rows * n_heads, n_chunks = 3;
  auto run = [&](Isa isa, std::vector<float>* out) {
    CpuBackend be(2, isa);
    std::vector<float> m(items), l(items), acc(items * hd);
    out->assign(q.size() + 2 * items * n_chunks, 0.0f);
    float* cmax = out->data() + q.size();
    AttentionState st{m.data(), l.data(), acc.data(), cmax, cmax + items * n_chunks, n_chunks};
    ASSERT_TRUE(be.AttentionBegin(shape, n_rows, st).ok());
    ASSERT_TRUE(be.AttentionChunks(qt, rows, 0, 0, n_chunks, shape, pool, st).ok());
    ASSERT_TRUE(
        be.AttentionFinish(shape, n_rows, st, Tensor{out->data(), DType::kF32, n_rows, qt.cols})
            .ok());
  };
  std::vector<float> ref, out;
  run(Isa::kScalar, &ref);
  EXPECT_TRUE(std::isnan(ref[2 * n_heads * hd])) << "the NaN key reaches the row that sees it";
  EXPECT_FALSE(std::isnan(ref[n_heads * hd])) << "and not the row that does not";
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni, Isa::kAmx}) {
    if (!IsaSupported(isa)) continue;
    run(isa, &out);
    EXPECT_EQ(0, std::memcmp(out.data(), ref.data(), ref.size() * 4)) << IsaName(isa);
  }
}

TEST(Attention, MatchesFloat64SoftmaxAcrossChunks) {
  std::mt19937 rng(6);
  const int n_heads = 4, n_kv = 2, hd = 32, bt = 8, n_keys = 29, layers = 2, layer = 1;
  const int kv_dim = n_kv * hd;
  const int n_blocks = 6;
  KvPoolView pool{{}, n_blocks, layers, kv_dim, bt};
  std::vector<uint16_t> storage = RandomHalves(rng, pool.block_elements() * n_blocks, 1.0f);
  pool.base = DeviceMemory(storage.data());  // the CPU backend computes in host memory
  // Scrambled block table: positions map to blocks 5, 2, 0, 3.
  std::vector<int32_t> table = {5, 2, 0, 3};
  auto q = RandomFloats(rng, n_heads * hd, 2.0f);
  std::vector<float> out(n_heads * hd);
  AttentionRow row{table.data(), n_keys};
  CpuBackend be(2, DefaultIsa());
  ASSERT_TRUE(
      be.Attention(Tensor{q.data(), DType::kF32, 1, n_heads * hd}, &row, layer,
                   AttentionShape{n_heads, n_kv, hd, 1.0f / std::sqrt(static_cast<float>(hd))},
                   pool, Tensor{out.data(), DType::kF32, 1, n_heads * hd})
          .ok());
  EXPECT_EQ(be.counters().attention_chunks, 4u);
  for (int h = 0; h < n_heads; ++h) {
    const int kvh = h / (n_heads / n_kv);
    std::vector<double> s(n_keys);
    double mx = -1e300;
    for (int j = 0; j < n_keys; ++j) {
      const uint16_t* k = pool.K(table[j / bt], layer).get() + (j % bt) * kv_dim + kvh * hd;
      double dot = 0;
      for (int i = 0; i < hd; ++i) dot += static_cast<double>(q[h * hd + i]) * F16ToF32(k[i]);
      s[j] = dot / std::sqrt(static_cast<double>(hd));
      mx = std::max(mx, s[j]);
    }
    double z = 0;
    for (double& v : s) z += (v = std::exp(v - mx));
    for (int i = 0; i < hd; ++i) {
      double ref = 0;
      for (int j = 0; j < n_keys; ++j) {
        ref += s[j] / z *
               F16ToF32(pool.V(table[j / bt], layer).get()[(j % bt) * kv_dim + kvh * hd + i]);
      }
      EXPECT_NEAR(out[h * hd + i], ref, 1e-5) << "head " << h << " dim " << i;
    }
  }
}

// Merging chunks in pieces, with one chunk served from a different (scratch) block holding a copy
// of its K/V, gives exactly the bits of one Attention call: what bounded generation relies on.
TEST(Attention, ChunkedWithScratchBlockEqualsOneCallBitForBit) {
  std::mt19937 rng(7);
  const int n_heads = 6, n_kv = 3, hd = 16, bt = 4, layers = 3, layer = 2, n_blocks = 8;
  const int kv_dim = n_kv * hd;
  KvPoolView pool{{}, n_blocks, layers, kv_dim, bt};
  std::vector<uint16_t> storage = RandomHalves(rng, pool.block_elements() * n_blocks, 1.0f);
  pool.base = DeviceMemory(storage.data());  // the CPU backend computes in host memory
  std::vector<int32_t> table = {3, 1, 6, 0, 4};
  // Two query rows of one sequence (positions 13 and 17) and one of another (position 5).
  std::vector<int32_t> table2 = {2, 5};
  std::vector<AttentionRow> rows = {{table.data(), 14}, {table.data(), 18}, {table2.data(), 6}};
  auto q = RandomFloats(rng, rows.size() * n_heads * hd, 2.0f);
  const AttentionShape shape{n_heads, n_kv, hd, 0.25f};
  Tensor qt{q.data(), DType::kF32, static_cast<int64_t>(rows.size()), n_heads * hd};
  CpuBackend be(2, DefaultIsa());
  std::vector<float> ref(q.size(), NAN), got(q.size(), NAN);
  ASSERT_TRUE(be.Attention(qt, rows.data(), layer, shape, pool,
                           Tensor{ref.data(), DType::kF32, qt.rows, qt.cols})
                  .ok());
  const int64_t items = qt.rows * n_heads;
  std::vector<float> m(items), l(items), acc(items * hd);
  AttentionState st{m.data(), l.data(), acc.data()};
  ASSERT_TRUE(be.AttentionBegin(shape, qt.rows, st).ok());
  ASSERT_TRUE(be.AttentionChunks(qt, rows.data(), layer, 0, 2, shape, pool, st).ok());
  // Chunk 2 of the first sequence is served from block 7, a copy ("rebuilt" scratch).
  std::copy(pool.K(6, 0).get(), pool.K(6, 0).get() + pool.block_elements(), pool.K(7, 0).get());
  table[2] = 7;
  ASSERT_TRUE(be.AttentionChunks(qt, rows.data(), layer, 2, 3, shape, pool, st).ok());
  table[2] = 6;
  ASSERT_TRUE(be.AttentionChunks(qt, rows.data(), layer, 3, 5, shape, pool, st).ok());
  ASSERT_TRUE(
      be.AttentionFinish(shape, qt.rows, st, Tensor{got.data(), DType::kF32, qt.rows, qt.cols})
          .ok());
  EXPECT_EQ(0, std::memcmp(ref.data(), got.data(), ref.size() * 4));
}

// Grouped-query heads computed together (a row's heads that share a key/value head, K and V read
// once for them: one thread) give the bits of each head computed alone (eight threads: ten groups
// would leave the busiest thread eight heads, one head an item five), outputs and
// per-chunk statistics, with full and partial chunks, on every ISA.
TEST(Attention, GroupedHeadsGiveTheBitsOfOneHeadAtATime) {
  std::mt19937 rng(21);
  const int n_heads = 8, n_kv = 2, hd = 64, bt = 16, layers = 2, layer = 1, n_rows = 5;
  const int n_blocks = 12, n_chunks = 12;
  KvPoolView pool{{}, n_blocks, layers, n_kv * hd, bt};
  std::vector<uint16_t> storage = RandomHalves(rng, pool.block_elements() * n_blocks, 1.5f);
  pool.base = DeviceMemory(storage.data());
  std::vector<int32_t> table(n_blocks);
  for (int i = 0; i < n_blocks; ++i) table[i] = (5 * i + 2) % n_blocks;
  const AttentionRow rows[n_rows] = {{table.data(), 190},
                                     {table.data(), 160},
                                     {table.data(), 33},
                                     {table.data(), 16},
                                     {table.data(), 1}};
  auto q = RandomFloats(rng, n_rows * n_heads * hd, 2.0f);
  const AttentionShape shape{n_heads, n_kv, hd, 0.125f};
  const Tensor qt{q.data(), DType::kF32, n_rows, n_heads * hd};
  const int items = n_rows * n_heads;
  auto run = [&](int threads, Isa isa, std::vector<float>* out) {
    CpuBackend be(threads, isa);
    std::vector<float> m(items), l(items), acc(items * hd);
    out->assign(q.size() + 2 * items * n_chunks, -9.0f);
    float* cmax = out->data() + q.size();
    AttentionState st{m.data(), l.data(), acc.data(), cmax, cmax + items * n_chunks, n_chunks};
    ASSERT_TRUE(be.AttentionBegin(shape, n_rows, st).ok());
    ASSERT_TRUE(be.AttentionChunks(qt, rows, layer, 0, 5, shape, pool, st).ok());
    ASSERT_TRUE(be.AttentionChunks(qt, rows, layer, 5, n_chunks, shape, pool, st).ok());
    ASSERT_TRUE(
        be.AttentionFinish(shape, n_rows, st, Tensor{out->data(), DType::kF32, n_rows, qt.cols})
            .ok());
  };
  std::vector<float> alone, grouped;
  run(8, Isa::kScalar, &alone);
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni, Isa::kAmx}) {
    if (!IsaSupported(isa)) continue;
    run(1, isa, &grouped);
    EXPECT_EQ(0, std::memcmp(grouped.data(), alone.data(), alone.size() * 4)) << IsaName(isa);
    run(8, isa, &grouped);
    EXPECT_EQ(0, std::memcmp(grouped.data(), alone.data(), alone.size() * 4)) << IsaName(isa);
  }
}

// K/V rows land in their slots as F16, rounded to nearest even exactly as kernels/half.h's
// F32ToF16 rounds (ties, subnormals, overflow to infinity and NaN included) on every ISA path.
TEST(StoreKv, RoundsEveryRowToF16LikeTheScalarConversion) {
  std::mt19937 rng(13);
  const int layers = 2, layer = 1, kv_dim = 40, bt = 4, n_blocks = 3, n = 5;
  std::vector<float> k = RandomFloats(rng, n * kv_dim, 3.0f),
                     v = RandomFloats(rng, n * kv_dim, 1e-5f);
  const float specials[] = {65504.0f, 65520.0f, -1e9f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048,
                            5.96e-8f, 2.98e-8f, -0.0f, INFINITY,           NAN};
  for (size_t i = 0; i < std::size(specials); ++i) k[3 * i] = specials[i];
  const std::vector<int32_t> slot_block = {2, 0, 2, 1, 0}, slot_offset = {0, 3, 1, 2, 0};
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni, Isa::kAmx}) {
    if (!IsaSupported(isa)) continue;
    KvPoolView pool{{}, n_blocks, layers, kv_dim, bt};
    std::vector<uint16_t> storage(pool.block_elements() * n_blocks,
                                  0x7DFF);  // a signalling NaN: F32ToF16 never writes one
    pool.base = DeviceMemory(storage.data());
    CpuBackend be(1, isa);
    ASSERT_TRUE(be.StoreKv(Tensor{k.data(), DType::kF32, n, kv_dim},
                           Tensor{v.data(), DType::kF32, n, kv_dim}, layer, slot_block.data(),
                           slot_offset.data(), pool)
                    .ok());
    size_t written = 0;
    for (int r = 0; r < n; ++r) {
      const uint16_t* kd = pool.K(slot_block[r], layer).get() + slot_offset[r] * kv_dim;
      const uint16_t* vd = pool.V(slot_block[r], layer).get() + slot_offset[r] * kv_dim;
      for (int i = 0; i < kv_dim; ++i) {
        ASSERT_EQ(kd[i], F32ToF16(k[r * kv_dim + i])) << IsaName(isa) << " K row " << r << " " << i;
        ASSERT_EQ(vd[i], F32ToF16(v[r * kv_dim + i])) << IsaName(isa) << " V row " << r << " " << i;
        written += 2;
      }
    }
    // Nothing outside the slots was touched.
    const size_t untouched = std::count(storage.begin(), storage.end(), uint16_t{0x7DFF});
    EXPECT_EQ(untouched, storage.size() - written) << IsaName(isa);
  }
}

// The reference is the loop greedy sampling always ran: the first strictly greater value wins.
int64_t LoopArgMax(const std::vector<float>& x) {
  int64_t best = 0;
  for (size_t i = 1; i < x.size(); ++i) {
    if (x[i] > x[best]) best = static_cast<int64_t>(i);
  }
  return best;
}

TEST(ArgMaxF32, EveryPathAnswersAsTheLoopOnTiesNansZerosAndInfinities) {
  std::mt19937 rng(11);
  const float inf = INFINITY;
  int checked = 0;
  for (int64_t n : {1, 2, 7, 8, 9, 15, 16, 17, 33, 100, 49152, 49157}) {
    for (int variant = 0; variant < 12; ++variant) {
      std::vector<float> x = RandomFloats(rng, n, 8.0f);
      std::uniform_int_distribution<int64_t> at(0, n - 1);
      const int64_t a = at(rng), b = at(rng);
      switch (variant) {
        case 1:
          x[a] = x[b] = 100.0f;
          break;  // a tie: the lower index
        case 2:
          x[0] = NAN;
          break;  // the loop never moves
        case 3:
          x[a] = NAN;
          x[b] = 50.0f;
          break;  // NaN skipped
        case 4:
          std::fill(x.begin(), x.end(), -0.0f);
          x[a] = 0.0f;
          break;  // -0 and +0 tie
        case 5:
          std::fill(x.begin(), x.end(), -inf);
          break;  // all -inf: index 0
        case 6:
          std::fill(x.begin(), x.end(), NAN);
          x[a] = -inf;
          break;
        case 7:
          x[a] = inf;
          x[b] = inf;
          break;
        case 8:
          x[n - 1] = 1e30f;
          break;  // in the scalar tail
        case 9:
          std::fill(x.begin(), x.end(), 3.0f);
          break;  // all equal
        case 10:
          std::fill(x.begin(), x.end(), NAN);
          break;  // only NaN
        case 11:
          x[a] = -inf;
          x[b] = NAN;
          x[0] = -inf;
          break;
        default:
          break;
      }
      const int64_t want = LoopArgMax(x);
      for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni, Isa::kAmx}) {
        if (!IsaSupported(isa)) continue;
        EXPECT_EQ(ArgMaxF32(isa, x.data(), n), want)
            << IsaName(isa) << " n=" << n << " variant " << variant;
        checked++;
      }
    }
  }
  EXPECT_GE(checked, 12 * 12 * 2) << "the scalar path and at least one vector path";
}

}  // namespace
}  // namespace rsd::cpu
