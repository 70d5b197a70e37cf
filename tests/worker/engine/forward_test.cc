// The forward pass on synthetic models written as real GGUF and safetensors files:
// accuracy against a float64 reference, GGUF == safetensors bit for bit, and the invariance
// matrix of DESIGN.md section 2 (prefill vs decode, threads, ISA paths, batching, rebuild from
// residuals), each with counters proving the path ran.
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/isa.h"
#include "storage/common/status.h"
#include "tests/support/reference_forward.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "tests/support/test_worker.h"
#include "worker/engine/engine.h"

namespace rsd {
namespace {

using testing::SyntheticModel;

struct Written {
  std::unique_ptr<SyntheticModel> model;
  std::string gguf, hf;
};

Written WriteCatalogModel(const std::string& name) {
  const auto* entry = testing::FindSyntheticModel(name);
  testing::TrueOrFail(entry != nullptr, "entry != nullptr");
  Written w;
  w.model = std::make_unique<SyntheticModel>(entry->options);
  const std::string dir = testing::MakeTempDir("rsd-forward-" + name);
  w.gguf = dir + "/" + name + ".gguf";
  w.hf = dir + "/" + name + "-hf";
  testing::OkOrFail(w.model->WriteGguf(w.gguf), "w.model->WriteGguf(w.gguf)");
  testing::OkOrFail(w.model->WriteHfFolder(w.hf), "w.model->WriteHfFolder(w.hf)");
  return w;
}

std::unique_ptr<Engine> MakeEngine(const std::string& path, int threads = 1,
                                   const std::string& isa = "", int block_tokens = 4) {
  EngineOptions o;
  o.model_path = path;
  o.threads = threads;
  o.isa = isa;
  o.block_tokens = block_tokens;
  auto e = Engine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(e).value() : nullptr;
}

std::vector<int32_t> Prompt(int n, int vocab, int salt = 0) {
  std::vector<int32_t> t = {1};
  for (int i = 1; i < n; ++i) t.push_back(3 + (i * 37 + salt * 11) % (vocab - 3));
  return t;
}

template <typename T>
bool SameBits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

const char* kF32Models[] = {"mha", "gqa", "mqa", "qwen2-bias"};

TEST(Forward, F32LogitsMatchFloat64ReferenceAndGgufEqualsSafetensors) {
  for (const char* name : kF32Models) {
    SCOPED_TRACE(name);
    Written w = WriteCatalogModel(name);
    auto eg = MakeEngine(w.gguf);
    auto eh = MakeEngine(w.hf);
    ASSERT_TRUE(eg && eh);
    const int vocab = eg->config().vocab_size;
    std::vector<int32_t> tokens = Prompt(23, vocab);
    std::vector<float> lg = testing::AllPositionLogits(*eg, tokens),
                       lh = testing::AllPositionLogits(*eh, tokens);
    EXPECT_TRUE(SameBits(lg, lh)) << "GGUF and safetensors copies differ";
    auto ref = testing::ReferenceForward(*w.model, tokens);
    double max_diff = 0, max_ref = 0;
    for (size_t t = 0; t < tokens.size(); ++t) {
      for (int v = 0; v < vocab; ++v) {
        max_diff = std::max(max_diff, std::fabs(lg[t * vocab + v] - ref[t][v]));
        max_ref = std::max(max_ref, std::fabs(ref[t][v]));
      }
    }
    std::printf("[ %s ] max|diff| / max|ref| = %.3g (max|ref| %.3g)\n", name, max_diff / max_ref,
                max_ref);
    EXPECT_LE(max_diff / max_ref, 1e-4);
    EXPECT_GT(max_ref, 0.1) << "degenerate model: logits near zero prove nothing";
  }
}

// K/V of `seq` for every layer and position (F16 bits), copied out of the pool through its block
// table.
std::vector<KvElement> SequenceKv(Engine& e, const SessionId& seq) {
  const KvPoolView& v = e.pool().view();
  const int64_t n = static_cast<int64_t>(e.SequenceTokens(seq).size());
  std::vector<KvElement> out;
  for (int l = 0; l < v.n_layers; ++l) {
    for (int64_t p = 0; p < n; ++p) {
      const int32_t b = e.SequenceBlocks(seq)[p / v.block_tokens];
      const size_t row = static_cast<size_t>(v.kv_dim) * kKvElementBytes;
      std::vector<KvElement> k(v.kv_dim), vv(v.kv_dim);
      EXPECT_TRUE(
          e.backend().CopyToHost(k.data(), v.K(b, l) + (p % v.block_tokens) * v.kv_dim, row).ok());
      EXPECT_TRUE(
          e.backend().CopyToHost(vv.data(), v.V(b, l) + (p % v.block_tokens) * v.kv_dim, row).ok());
      out.insert(out.end(), k.begin(), k.end());
      out.insert(out.end(), vv.begin(), vv.end());
    }
  }
  return out;
}

TEST(Invariance, PrefillEqualsTokenByTokenForKvResidualsAndLogits) {
  for (const char* name : {"mha", "gqa"}) {
    SCOPED_TRACE(name);
    Written w = WriteCatalogModel(name);
    auto e = MakeEngine(w.gguf, 2);
    ASSERT_TRUE(e);
    std::vector<int32_t> tokens = Prompt(19, e->config().vocab_size);
    // Whole prompt in one call: GEMMs with 19 rows.
    e->backend().ResetCounters();
    SessionId a = e->CreateSequence();
    Engine::Work wa{a, tokens, true};
    ForwardResult ra;
    ASSERT_TRUE(e->Step(std::span<const Engine::Work>(&wa, 1), true, &ra).ok());
    EXPECT_EQ(e->backend().counters().matmul_max_rows, tokens.size());
    // One token at a time: GEMMs with 1 row.
    e->backend().ResetCounters();
    SessionId b = e->CreateSequence();
    std::vector<float> logits_b, residuals_b;
    std::vector<std::vector<float>> res_by_token;
    for (size_t i = 0; i < tokens.size(); ++i) {
      Engine::Work wb{b, std::span<const int32_t>(&tokens[i], 1), false};
      ForwardResult rb;
      ASSERT_TRUE(e->Step(std::span<const Engine::Work>(&wb, 1), true, &rb).ok());
      logits_b.insert(logits_b.end(), rb.logits.begin(), rb.logits.end());
      res_by_token.push_back(rb.residuals);
    }
    EXPECT_EQ(e->backend().counters().matmul_max_rows, 1u);
    EXPECT_TRUE(SameBits(ra.logits, logits_b));
    EXPECT_TRUE(SameBits(SequenceKv(*e, a), SequenceKv(*e, b)));
    // Residuals: prefill gives [L, n, d]; token i gives [L, 1, d].
    const int L = e->config().n_layers, d = e->config().d_model;
    const size_t n = tokens.size();
    for (int l = 0; l < L; ++l) {
      for (size_t t = 0; t < n; ++t) {
        ASSERT_EQ(0, std::memcmp(ra.residuals.data() + (l * n + t) * d,
                                 res_by_token[t].data() + static_cast<size_t>(l) * d, d * 4))
            << "layer " << l << " token " << t;
      }
    }
  }
}

TEST(Invariance, LogitsIdenticalForOneTwoThreeThreads) {
  Written w = WriteCatalogModel("gqa");
  std::vector<float> ref;
  for (int threads : {1, 2, 3}) {
    auto e = MakeEngine(w.gguf, threads);
    ASSERT_TRUE(e);
    e->backend().ResetCounters();
    auto l = testing::AllPositionLogits(*e, Prompt(17, e->config().vocab_size));
    EXPECT_EQ(e->backend().counters().max_threads_used, threads) << "threads really used";
    if (ref.empty()) ref = l;
    EXPECT_TRUE(SameBits(l, ref)) << threads << " threads";
  }
}

// Every ISA path, F32 and each quantized type (whose matmuls take the integer kernels: the VNNI
// path's one-row and many-row forms both run, a prompt being many rows), gives the same logits.
TEST(Invariance, LogitsIdenticalOnEveryIsaPath) {
  for (const char* model : {"mha", "mha-q8_0", "mha-q4_0", "gqa-q4_1"}) {
    Written w = WriteCatalogModel(model);
    std::vector<float> ref;
    for (const char* isa : {"scalar", "avx2", "avx512", "avx512vnni", "amx"}) {
      cpu::Isa parsed;
      ASSERT_TRUE(cpu::ParseIsa(isa, &parsed));
      if (!cpu::IsaSupported(parsed)) {
        std::printf("[ note ] ISA path %s not supported on this CPU: not exercised here\n", isa);
        continue;
      }
      auto e = MakeEngine(w.gguf, 2, isa);
      ASSERT_TRUE(e);
      EXPECT_EQ(e->backend().name(), std::string("cpu/") + isa);
      // The prompt as one step of 21 rows (on the AMX path one tile of 16 and 5 more), then one
      // decode row.
      const std::vector<int32_t> prompt = Prompt(21, e->config().vocab_size);
      SessionId seq = e->CreateSequence();
      Engine::Work many{seq, prompt, true};
      ForwardResult r1, r2;
      ASSERT_TRUE(e->Step(std::span<const Engine::Work>(&many, 1), false, &r1).ok());
      const int32_t next = prompt[5];
      Engine::Work one{seq, std::span<const int32_t>(&next, 1), true};
      ASSERT_TRUE(e->Step(std::span<const Engine::Work>(&one, 1), false, &r2).ok());
      e->DestroySequence(seq);
      std::vector<float> l = r1.logits;
      l.insert(l.end(), r2.logits.begin(), r2.logits.end());
      if (ref.empty()) ref = l;
      EXPECT_TRUE(SameBits(l, ref)) << model << " " << isa;
    }
  }
}

TEST(Invariance, BatchedWithOtherSequencesEqualsAlone) {
  Written w = WriteCatalogModel("gqa");
  auto e = MakeEngine(w.gguf, 2);
  ASSERT_TRUE(e);
  const int vocab = e->config().vocab_size;
  std::vector<std::vector<int32_t>> prompts = {Prompt(5, vocab, 1), Prompt(13, vocab, 2),
                                               Prompt(1, vocab, 3), Prompt(8, vocab, 4)};
  std::vector<std::vector<float>> alone;
  for (auto& p : prompts) alone.push_back(testing::AllPositionLogits(*e, p));
  // Now all four in one forward call, then a decode step of all four together.
  std::vector<SessionId> seqs;
  std::vector<Engine::Work> work;
  for (auto& p : prompts) {
    seqs.push_back(e->CreateSequence());
    work.push_back(Engine::Work{seqs.back(), p, true});
  }
  e->backend().ResetCounters();
  ForwardResult r;
  ASSERT_TRUE(e->Step(work, false, &r).ok());
  EXPECT_EQ(e->backend().counters().matmul_max_rows, 5u + 13u + 1u + 8u);
  size_t off = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<float> mine(r.logits.begin() + off, r.logits.begin() + off + alone[i].size());
    EXPECT_TRUE(SameBits(mine, alone[i])) << "sequence " << i;
    off += alone[i].size();
  }
}

TEST(Invariance, KvRebuiltFromResidualsIntoPoisonedBufferEqualsCache) {
  for (const char* name : {"mha", "gqa", "qwen2-bias"}) {
    SCOPED_TRACE(name);
    Written w = WriteCatalogModel(name);
    auto e = MakeEngine(w.gguf, 2);
    ASSERT_TRUE(e);
    std::vector<int32_t> tokens = Prompt(11, e->config().vocab_size);
    SessionId s = e->CreateSequence();
    Engine::Work wk{s, tokens, false};
    ForwardResult r;
    ASSERT_TRUE(e->Step(std::span<const Engine::Work>(&wk, 1), true, &r).ok());
    const int L = e->config().n_layers, d = e->config().d_model, kvd = e->model().kv_dim();
    const size_t n = tokens.size();
    std::vector<int32_t> pos(n);
    for (size_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>(i);
    std::vector<KvElement> cached = SequenceKv(*e, s);
    for (int l = 0; l < L; ++l) {
      std::vector<KvElement> k(n * kvd, 0xFFFF), v(n * kvd, 0xFFFF);  // NaN poison
      std::span<const float> h(r.residuals.data() + static_cast<size_t>(l) * n * d, n * d);
      ASSERT_TRUE(e->model().KvFromResidual(l, h, pos, k.data(), v.data()).ok());
      for (size_t t = 0; t < n; ++t) {
        const KvElement* ck = cached.data() + (static_cast<size_t>(l) * n + t) * 2 * kvd;
        EXPECT_EQ(0, std::memcmp(k.data() + t * kvd, ck, kvd * 2)) << "K layer " << l << " t " << t;
        EXPECT_EQ(0, std::memcmp(v.data() + t * kvd, ck + kvd, kvd * 2)) << "V layer " << l;
      }
    }
  }
}

// Restore rebuilds a layer's chunks together (up to rebuild_chunks() per pass): every block
// comes back with the bits the forward cached, in the residual, kv and a mixed plan, over more
// chunks than one pass takes, into poisoned blocks (a row a pass leaves unwritten shows as NaN).
TEST(Invariance, RestoreRebuildingManyChunksPerPassGivesTheCachedBits) {
  Written w = WriteCatalogModel("gqa");
  EngineOptions o;
  o.model_path = w.gguf;
  o.threads = 2;
  o.block_tokens = 4;
  o.keep_residuals = true;
  o.poison_freed_blocks = true;
  auto created = Engine::Create(o);
  ASSERT_TRUE(created.ok()) << created.status();
  Engine& e = **created;
  const int L = e.config().n_layers, per_pass = Transformer::rebuild_chunks();
  ASSERT_GT(per_pass, 1);
  const std::vector<int32_t> tokens = Prompt(4 * (2 * per_pass + 3), e.config().vocab_size);
  std::string mixed;
  for (int l = 0; l < L; ++l) mixed += l % 2 == 0 ? 'k' : 'r';
  const LayerPlan plans[] = {LayerPlan::Uniform(L, StateForm::kResidual),
                             LayerPlan::Uniform(L, StateForm::kKv), *LayerPlan::Parse(mixed, L)};
  for (const LayerPlan& plan : plans) {
    SessionId s = e.CreateSequence();  // a fresh sequence: each plan spills from a hot one
    Engine::Work wk{s, tokens, false};
    ForwardResult r;
    ASSERT_TRUE(e.Step(std::span<const Engine::Work>(&wk, 1), false, &r).ok());
    const std::vector<KvElement> cached = SequenceKv(e, s);
    const absl::Status spilled = e.Spill(s, plan);
    ASSERT_TRUE(spilled.ok()) << plan.ToString() << ": " << spilled;
    e.model().ResetRebuildCounters();
    absl::StatusOr<std::string> from = e.Restore(s);
    ASSERT_TRUE(from.ok()) << from.status();
    EXPECT_TRUE(SameBits(SequenceKv(e, s), cached)) << "plan " << plan.ToString();
    const RebuildCounters& c = e.model().rebuild_counters();
    EXPECT_EQ(c.from_residual + c.from_kv + c.from_tokens,
              static_cast<uint64_t>(e.FullChunks(s)) * L)
        << "every chunk and layer rebuilt once";
    e.DestroySequence(s);
  }
}

}  // namespace
}  // namespace rsd
