// Every op of the CUDA backend against the CPU backend, bit for bit (memcmp): on the emulated
// device (cuda-emu) in every CI run, and on a real GPU where one is present (tools/gpu-check).
// Inputs cover every weight dtype, shapes with partial 16-lane groups and partial chunks, GQA, MQA
// and MHA attention, the chunked attention API and its statistics, and SiluMul's edge values.
// Counters prove the device code ran. Labels: unit (cuda-emu), gpu (a real device).
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend_factory.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/random_data.h"

namespace rsd {
namespace {

using testing::RandomFloats;
using testing::RandomHalves;
using testing::RandomWeights;

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

// The first differing index, for messages.
std::string FirstDiff(const std::vector<float>& a, const std::vector<float>& b) {
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (std::memcmp(&a[i], &b[i], 4) != 0) {
      return "first difference at " + std::to_string(i) + ": " + std::to_string(a[i]) + " vs " +
             std::to_string(b[i]);
    }
  }
  return a.size() == b.size() ? "equal" : "sizes differ";
}

// Device memory holding a copy of host data, freed with the backend.
class Device {
 public:
  explicit Device(Backend* b) : b_(b) {}
  ~Device() {
    for (DevicePtr<void> p : owned_) b_->Free(p);
  }
  // Raw device pointers: op arguments, never read on the host.
  template <class T>
  T* Put(const std::vector<T>& h) {
    T* p = static_cast<T*>(Alloc(h.size() * sizeof(T)));
    EXPECT_TRUE(b_->CopyToDevice(DeviceMemory(p), h.data(), h.size() * sizeof(T)).ok());
    return p;
  }
  void* Alloc(size_t bytes) {
    absl::StatusOr<DevicePtr<void>> p = b_->Alloc(bytes, "test buffer");
    EXPECT_TRUE(p.ok()) << p.status();
    owned_.push_back(*p);
    return p->get();
  }
  float* Floats(size_t n) {
    float* p = static_cast<float*>(Alloc(n * sizeof(float)));
    EXPECT_TRUE(b_->Fill(DeviceMemory(p), 0xFF, n * sizeof(float)).ok());  // NaN shows gaps
    return p;
  }
  template <class T>
  std::vector<T> Get(const T* p, size_t n) {
    std::vector<T> h(n);
    EXPECT_TRUE(b_->CopyToHost(h.data(), DeviceMemory(p), n * sizeof(T)).ok());
    return h;
  }

 private:
  Backend* b_;
  std::vector<DevicePtr<void>> owned_;
};

class CudaParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    BackendOptions o;
    o.device = GetParam();
    auto b = CreateBackend(o);
    if (!b.ok() && b.status().code() == absl::StatusCode::kFailedPrecondition) {
      GTEST_SKIP() << GetParam() << " is not available here (" << b.status().message()
                   << "); tools/gpu-check runs these on a GPU";
    }
    ASSERT_TRUE(b.ok()) << b.status();
    dev_ = std::move(b).value();
  }
  void TearDown() override {
    if (dev_) {
      EXPECT_GT(dev_->counters().device_launches, 0u) << "the device code must have run";
    }
  }
  cpu::CpuBackend cpu_{1, cpu::Isa::kScalar};
  std::unique_ptr<Backend> dev_;
};

TEST_P(CudaParity, EmbedEveryDtype) {
  std::mt19937 rng(1);
  const int64_t vocab = 37, cols = 96;
  const std::vector<int32_t> ids = {0, 36, 5, 5, 17, 1, 30};
  for (DType t :
       {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_1}) {
    SCOPED_TRACE(DTypeName(t));
    std::vector<uint8_t> table = RandomWeights(rng, t, vocab, cols);
    const int64_t n = static_cast<int64_t>(ids.size());
    std::vector<float> ref(n * cols);
    ASSERT_TRUE(cpu_.Embed(Tensor{table.data(), t, vocab, cols}, ids.data(),
                           Tensor{ref.data(), DType::kF32, n, cols})
                    .ok());
    Device d(dev_.get());
    float* out = d.Floats(n * cols);
    ASSERT_TRUE(dev_->Embed(Tensor{d.Put(table), t, vocab, cols}, d.Put(ids),
                            Tensor{out, DType::kF32, n, cols})
                    .ok());
    std::vector<float> got = d.Get(out, n * cols);
    EXPECT_TRUE(SameBits(got, ref)) << FirstDiff(got, ref);
  }
}

TEST_P(CudaParity, RmsNormIncludingInPlace) {
  std::mt19937 rng(2);
  for (int64_t cols : {576, 70, 8}) {
    const int64_t rows = 13;
    auto x = RandomFloats(rng, rows * cols, 3.0f), w = RandomFloats(rng, cols, 1.0f);
    std::vector<float> ref(x.size());
    ASSERT_TRUE(cpu_.RmsNorm(Tensor{x.data(), DType::kF32, rows, cols}, w.data(), 1e-5f,
                             Tensor{ref.data(), DType::kF32, rows, cols})
                    .ok());
    Device d(dev_.get());
    float* dx = d.Put(x);
    ASSERT_TRUE(dev_->RmsNorm(Tensor{dx, DType::kF32, rows, cols}, d.Put(w), 1e-5f,
                              Tensor{dx, DType::kF32, rows, cols})
                    .ok());
    std::vector<float> got = d.Get(dx, x.size());
    EXPECT_TRUE(SameBits(got, ref)) << "cols " << cols << ": " << FirstDiff(got, ref);
  }
}

// Every dtype, row counts that do and do not fill a warp's work, K with and without a partial
// 16-lane group (float types) and block counts that are not a multiple of four (quantized).
TEST_P(CudaParity, MatMulEveryDtypeAndShapeWithAndWithoutBias) {
  std::mt19937 rng(3);
  for (DType t :
       {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_1}) {
    const bool quant = DTypeBlockValues(t) == 32;
    for (int64_t k :
         quant ? std::vector<int64_t>{64, 96, 160, 576} : std::vector<int64_t>{8, 40, 576}) {
      for (int64_t n : {1, 3, 17}) {
        for (bool with_bias : {false, true}) {
          SCOPED_TRACE(std::string(DTypeName(t)) + " k=" + std::to_string(k) +
                       " n=" + std::to_string(n) + (with_bias ? " bias" : ""));
          const int64_t m = 45;
          auto x = RandomFloats(rng, n * k, 2.0f);
          auto w = RandomWeights(rng, t, m, k);
          auto bias = RandomFloats(rng, m, 0.5f);
          std::vector<float> ref(n * m);
          ASSERT_TRUE(cpu_.MatMul(Tensor{x.data(), DType::kF32, n, k}, Tensor{w.data(), t, m, k},
                                  with_bias ? bias.data() : nullptr,
                                  Tensor{ref.data(), DType::kF32, n, m})
                          .ok());
          Device d(dev_.get());
          float* out = d.Floats(n * m);
          float* dx = d.Put(x);
          uint8_t* dw = d.Put(w);
          const float* db = with_bias ? d.Put(bias) : nullptr;
          ASSERT_TRUE(dev_->MatMul(Tensor{dx, DType::kF32, n, k}, Tensor{dw, t, m, k}, db,
                                   Tensor{out, DType::kF32, n, m})
                          .ok());
          std::vector<float> got = d.Get(out, n * m);
          EXPECT_TRUE(SameBits(got, ref)) << FirstDiff(got, ref);
          // The last row alone gives the same bits as inside the batch.
          float* one = d.Floats(m);
          ASSERT_TRUE(dev_->MatMul(Tensor{dx + (n - 1) * k, DType::kF32, 1, k}, Tensor{dw, t, m, k},
                                   db, Tensor{one, DType::kF32, 1, m})
                          .ok());
          std::vector<float> alone = d.Get(one, m);
          EXPECT_EQ(0, std::memcmp(alone.data(), ref.data() + (n - 1) * m, m * 4));
        }
      }
    }
  }
  EXPECT_GT(dev_->counters().matmul_calls, 0u);
}

TEST_P(CudaParity, RopeAndStoreKv) {
  std::mt19937 rng(4);
  const int rows = 11, heads = 3, hd = 64, max_pos = 40;
  auto cs = RandomFloats(rng, max_pos * hd / 2, 1.0f),
       sn = RandomFloats(rng, max_pos * hd / 2, 1.0f);
  auto x = RandomFloats(rng, rows * heads * hd, 2.0f);
  std::vector<int32_t> pos(rows);
  for (int r = 0; r < rows; ++r) pos[r] = (r * 7) % max_pos;
  std::vector<float> ref = x;
  ASSERT_TRUE(cpu_.Rope(Tensor{ref.data(), DType::kF32, rows, heads * hd}, heads, hd, pos.data(),
                        RopeTable{cs.data(), sn.data(), max_pos, hd / 2})
                  .ok());
  Device d(dev_.get());
  float* dx = d.Put(x);
  ASSERT_TRUE(dev_->Rope(Tensor{dx, DType::kF32, rows, heads * hd}, heads, hd, d.Put(pos),
                         RopeTable{d.Put(cs), d.Put(sn), max_pos, hd / 2})
                  .ok());
  std::vector<float> got = d.Get(dx, x.size());
  EXPECT_TRUE(SameBits(got, ref)) << FirstDiff(got, ref);

  // StoreKv into a pool: rows land at their (block, offset) slots of the right layer, rounded to
  // F16 with the CPU's bits (ties, subnormals, overflow and NaN among them).
  const int layers = 2, kv_dim = 24, bt = 4, n_blocks = 3;
  KvPoolView host_pool{{}, n_blocks, layers, kv_dim, bt};
  std::vector<uint16_t> pool_ref(host_pool.block_elements() * n_blocks, 0x3800);
  host_pool.base = DeviceMemory(pool_ref.data());  // the CPU backend computes in host memory
  auto k = RandomFloats(rng, 5 * kv_dim, 1.0f), v = RandomFloats(rng, 5 * kv_dim, 1e-5f);
  const float specials[] = {65520.0f, -1e9f, 1.0f + 1.0f / 2048, 2.98e-8f, INFINITY, NAN};
  for (size_t i = 0; i < std::size(specials); ++i) k[7 * i] = specials[i];
  const std::vector<int32_t> blocks = {2, 2, 0, 1, 2}, offs = {0, 3, 1, 2, 1};
  ASSERT_TRUE(cpu_.StoreKv(Tensor{k.data(), DType::kF32, 5, kv_dim},
                           Tensor{v.data(), DType::kF32, 5, kv_dim}, 1, blocks.data(), offs.data(),
                           host_pool)
                  .ok());
  std::vector<uint16_t> init(pool_ref.size(), 0x3800);
  KvPoolView dev_pool{DeviceMemory(d.Put(init)), n_blocks, layers, kv_dim, bt};
  ASSERT_TRUE(dev_->StoreKv(Tensor{d.Put(k), DType::kF32, 5, kv_dim},
                            Tensor{d.Put(v), DType::kF32, 5, kv_dim}, 1, d.Put(blocks), d.Put(offs),
                            dev_pool)
                  .ok());
  std::vector<uint16_t> pool_got = d.Get(dev_pool.base.get(), pool_ref.size());
  EXPECT_EQ(pool_got, pool_ref);
}

struct AttnCase {
  int n_heads, n_kv, hd, bt;
  std::vector<int32_t> n_keys;  // per row
};

// Full attention, the chunked API split at odd places, and the per-chunk statistics: on the
// device exactly as on the CPU.
TEST_P(CudaParity, AttentionFullChunkedAndStatistics) {
  std::mt19937 rng(5);
  const std::vector<AttnCase> cases = {
      {9, 3, 64, 16, {77, 16, 5, 1}},  // SmolLM2's heads (GQA), partial and single-key chunks
      {8, 4, 8, 16, {33, 2}},          // stories260K's head_dim 8 (below one 16-lane group)
      {4, 4, 40, 4, {13, 9, 4}},       // MHA, head_dim with a partial 16-lane group
      {6, 1, 32, 64, {130, 64}},       // MQA, chunks longer than a warp
  };
  for (const AttnCase& c : cases) {
    SCOPED_TRACE("heads " + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv) + " hd " +
                 std::to_string(c.hd) + " bt " + std::to_string(c.bt));
    const int layers = 2, layer = 1, kv_dim = c.n_kv * c.hd;
    const int n_rows = static_cast<int>(c.n_keys.size());
    int32_t max_keys = 0;
    for (int32_t k : c.n_keys) max_keys = std::max(max_keys, k);
    const int n_chunks = (max_keys + c.bt - 1) / c.bt;
    const int n_blocks = n_chunks + 2;
    KvPoolView pool{{}, n_blocks, layers, kv_dim, c.bt};
    std::vector<uint16_t> storage = RandomHalves(rng, pool.block_elements() * n_blocks, 1.5f);
    pool.base = DeviceMemory(storage.data());  // the CPU backend computes in host memory
    std::vector<int32_t> table(n_chunks);
    for (int i = 0; i < n_chunks; ++i) table[i] = (i * 5 + 1) % n_blocks;  // scattered blocks
    auto q = RandomFloats(rng, n_rows * c.n_heads * c.hd, 2.0f);
    std::vector<AttentionRow> rows;
    for (int32_t k : c.n_keys) rows.push_back(AttentionRow{table.data(), k});
    AttentionShape shape{c.n_heads, c.n_kv, c.hd, 1.0f / std::sqrt(static_cast<float>(c.hd))};
    const int64_t items = static_cast<int64_t>(n_rows) * c.n_heads;
    const Tensor qt{q.data(), DType::kF32, n_rows, c.n_heads * c.hd};

    // CPU reference: full, then chunked with statistics.
    std::vector<float> ref(q.size());
    ASSERT_TRUE(cpu_.Attention(qt, rows.data(), layer, shape, pool,
                               Tensor{ref.data(), DType::kF32, qt.rows, qt.cols})
                    .ok());
    std::vector<float> m(items), l(items), acc(items * c.hd), cmax(items * n_chunks),
        csum(items * n_chunks), ref_chunked(q.size());
    // Chunks a row never merges keep their fill (the transformer fills with 0xFF bytes too).
    std::memset(cmax.data(), 0xFF, cmax.size() * 4);
    std::memset(csum.data(), 0xFF, csum.size() * 4);
    AttentionState st{m.data(), l.data(), acc.data(), cmax.data(), csum.data(), n_chunks};
    const int split = n_chunks / 2;
    ASSERT_TRUE(cpu_.AttentionBegin(shape, n_rows, st).ok());
    ASSERT_TRUE(cpu_.AttentionChunks(qt, rows.data(), layer, 0, split, shape, pool, st).ok());
    ASSERT_TRUE(
        cpu_.AttentionChunks(qt, rows.data(), layer, split, n_chunks, shape, pool, st).ok());
    ASSERT_TRUE(cpu_.AttentionFinish(shape, n_rows, st,
                                     Tensor{ref_chunked.data(), DType::kF32, qt.rows, qt.cols})
                    .ok());
    ASSERT_TRUE(SameBits(ref_chunked, ref)) << "the CPU's own chunked == full";

    // Device: the same, with the pool, tables and rows in device memory.
    Device d(dev_.get());
    KvPoolView dpool = pool;
    dpool.base = DeviceMemory(d.Put(storage));
    const int32_t* dtable = d.Put(table);
    std::vector<AttentionRow> drows_h;
    for (int32_t k : c.n_keys) drows_h.push_back(AttentionRow{dtable, k});
    const AttentionRow* drows = d.Put(drows_h);
    const Tensor dq{d.Put(q), DType::kF32, qt.rows, qt.cols};
    for (int32_t bound : {0, max_keys}) {  // without and with the max_keys hint
      shape.max_keys = bound;
      float* out = d.Floats(q.size());
      ASSERT_TRUE(dev_->Attention(dq, drows, layer, shape, dpool,
                                  Tensor{out, DType::kF32, qt.rows, qt.cols})
                      .ok());
      std::vector<float> got = d.Get(out, q.size());
      EXPECT_TRUE(SameBits(got, ref)) << "full, max_keys " << bound << ": " << FirstDiff(got, ref);
    }
    AttentionState dst{d.Floats(items),
                       d.Floats(items),
                       d.Floats(items * c.hd),
                       d.Floats(items * n_chunks),
                       d.Floats(items * n_chunks),
                       n_chunks};
    float* out = d.Floats(q.size());
    ASSERT_TRUE(dev_->AttentionBegin(shape, n_rows, dst).ok());
    ASSERT_TRUE(dev_->AttentionChunks(dq, drows, layer, 0, split, shape, dpool, dst).ok());
    ASSERT_TRUE(dev_->AttentionChunks(dq, drows, layer, split, n_chunks, shape, dpool, dst).ok());
    ASSERT_TRUE(
        dev_->AttentionFinish(shape, n_rows, dst, Tensor{out, DType::kF32, qt.rows, qt.cols}).ok());
    std::vector<float> got = d.Get(out, q.size());
    EXPECT_TRUE(SameBits(got, ref)) << "chunked: " << FirstDiff(got, ref);
    std::vector<float> gmax = d.Get(dst.chunk_max, cmax.size()),
                       gsum = d.Get(dst.chunk_sum, csum.size());
    EXPECT_TRUE(SameBits(gmax, cmax)) << "chunk maxima: " << FirstDiff(gmax, cmax);
    EXPECT_TRUE(SameBits(gsum, csum)) << "chunk sums: " << FirstDiff(gsum, csum);
    std::vector<float> gm = d.Get(dst.m, items), gl = d.Get(dst.l, items);
    EXPECT_TRUE(SameBits(gm, m) && SameBits(gl, l)) << "running state";
  }
  EXPECT_GT(dev_->counters().attention_chunks, 0u);
}

TEST_P(CudaParity, SiluMulAndAddIncludingEdgeValues) {
  std::mt19937 rng(6);
  const int64_t rows = 4, cols = 1000;
  auto g = RandomFloats(rng, rows * cols, 30.0f), u = RandomFloats(rng, rows * cols, 2.0f);
  const float edges[] = {0.0f,    -0.0f,    87.3f,     -87.3f, 87.29f,  -88.0f,
                         88.0f,   88.01f,   -88.01f,   100.0f, -100.0f, 1e-30f,
                         -1e-30f, INFINITY, -INFINITY, NAN,    0.5f,    -0.5f};
  for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); ++i) g[i * 7] = edges[i];
  std::vector<float> ref(g.size());
  ASSERT_TRUE(cpu_.SiluMul(Tensor{g.data(), DType::kF32, rows, cols},
                           Tensor{u.data(), DType::kF32, rows, cols},
                           Tensor{ref.data(), DType::kF32, rows, cols})
                  .ok());
  Device d(dev_.get());
  float* dg = d.Put(g);
  float* du = d.Put(u);
  float* out = d.Floats(g.size());
  ASSERT_TRUE(dev_->SiluMul(Tensor{dg, DType::kF32, rows, cols},
                            Tensor{du, DType::kF32, rows, cols},
                            Tensor{out, DType::kF32, rows, cols})
                  .ok());
  std::vector<float> got = d.Get(out, g.size());
  EXPECT_TRUE(SameBits(got, ref)) << FirstDiff(got, ref);

  std::vector<float> sum = g;
  ASSERT_TRUE(cpu_.Add(Tensor{sum.data(), DType::kF32, rows, cols},
                       Tensor{u.data(), DType::kF32, rows, cols})
                  .ok());
  ASSERT_TRUE(
      dev_->Add(Tensor{dg, DType::kF32, rows, cols}, Tensor{du, DType::kF32, rows, cols}).ok());
  got = d.Get(dg, g.size());
  EXPECT_TRUE(SameBits(got, sum)) << FirstDiff(got, sum);
}

// Allocation failures are RESOURCE_EXHAUSTED naming what and how much, and leave the backend
// usable.
TEST_P(CudaParity, OutOfDeviceMemoryIsAStatusAndTheBackendKeepsWorking) {
  BackendOptions o;
  o.device = GetParam();
  o.memory_limit = 1 << 20;
  auto small = CreateBackend(o);
  ASSERT_TRUE(small.ok()) << small.status();
  Backend& b = **small;
  absl::StatusOr<DevicePtr<void>> big = b.Alloc(2 << 20, "a test tensor");
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(big.status().message().find("a test tensor (2097152 bytes)"), std::string::npos)
      << big.status();
  absl::StatusOr<DevicePtr<void>> fits = b.Alloc(4096, "a small tensor");
  ASSERT_TRUE(fits.ok()) << fits.status();
  std::vector<float> x(1024, 1.5f), y(1024);
  ASSERT_TRUE(b.CopyToDevice(*fits, x.data(), 4096).ok());
  ASSERT_TRUE(
      b.Add(Tensor{fits->get(), DType::kF32, 1, 1024}, Tensor{fits->get(), DType::kF32, 1, 1024})
          .ok());
  ASSERT_TRUE(b.CopyToHost(y.data(), *fits, 4096).ok());
  EXPECT_EQ(y[1023], 3.0f);
  EXPECT_GE(b.device_info().memory_used, 4096u);
  EXPECT_GT(b.counters().device_launches, 0u);
  b.Free(*fits);
  dev_.reset();  // unused here
}

INSTANTIATE_TEST_SUITE_P(Devices, CudaParity, ::testing::Values("cuda-emu", "cuda"),
                         [](const auto& info) {
                           return info.param == "cuda-emu" ? std::string("Emulated")
                                                           : std::string("Gpu");
                         });

}  // namespace
}  // namespace rsd
