// The engine on the CUDA backend against the CPU backend, bit for bit (DESIGN.md section 2: one
// numerics fingerprint for both). It runs on the emulated device (cuda-emu) in every CI run, and
// on a real GPU under tools/gpu-check (RSD_TEST_DEVICE=cuda). Covered: every synthetic model shape
// (MHA, GQA, MQA, Qwen2 with bias) in every weight dtype, stories260K, prefill vs one token at a
// time, a batch of sequences of different lengths vs each alone, rebuilds from residual and K/V
// checkpoints into NaN-poisoned device blocks, and a bounded session that spills to the warm tier
// and RocksDB between turns and comes back. Counters prove the device path ran.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/common/status.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "tests/support/test_worker.h"
#include "worker/engine/session_manager.h"

namespace rsd {
namespace {

std::string TestDevice() {
  const char* d = std::getenv("RSD_TEST_DEVICE");
  return d != nullptr && *d != '\0' ? d : "cuda-emu";
}

// On a real GPU (tools/gpu-check sets RSD_TEST_LARGE=1) the batch has 16 sequences and the
// session 20 turns; emulated, 4 and 3 keep CI fast.
bool Large() {
  const char* l = std::getenv("RSD_TEST_LARGE");
  return l != nullptr && std::string(l) == "1";
}

struct EngineSpec {
  std::string device = "cpu";
  int hot_budget_tokens = 0;
  std::string spill_form = "residual";
  bool poison = false;
  bool keep_residuals = false;
  int block_tokens = 4;
};

std::unique_ptr<Engine> MakeEngine(const std::string& path, const EngineSpec& s) {
  EngineOptions o;
  o.model_path = path;
  o.device = s.device;
  o.block_tokens = s.block_tokens;
  o.hot_budget_tokens = s.hot_budget_tokens;
  o.spill_form = s.spill_form;
  o.poison_freed_blocks = s.poison;
  o.keep_residuals = s.keep_residuals;
  auto e = Engine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(e).value() : nullptr;
}

std::string WriteModel(const std::string& name, DType dtype, int context_length = 0) {
  const auto* entry = testing::FindSyntheticModel(name);
  testing::TrueOrFail(entry != nullptr, "entry != nullptr");
  testing::SyntheticModelOptions o = entry->options;
  o.weight_dtype = dtype;
  if (context_length > 0) o.context_length = context_length;
  testing::SyntheticModel model(o);
  const std::string path = testing::MakeTempDir("rsd-cuda-engine") + "/" + name + ".gguf";
  testing::OkOrFail(model.WriteGguf(path), "model.WriteGguf(path)");
  return path;
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

// Logits of every position, residuals entering every layer, and the sequence's K/V read back
// through the backend (never by dereferencing device memory).
struct Prefill {
  std::vector<float> logits, residuals;
  std::vector<KvElement> kv;
};

Prefill RunPrefill(Engine& e, const std::vector<int32_t>& tokens) {
  Prefill p;
  const SessionId seq = e.CreateSequence();
  Engine::Work w{seq, tokens, true};
  ForwardResult r;
  EXPECT_TRUE(e.Step(std::span<const Engine::Work>(&w, 1), true, &r).ok());
  p.logits = r.logits;
  p.residuals = r.residuals;
  const KvPoolView& v = e.pool().view();
  for (int32_t b : e.SequenceBlocks(seq)) {
    std::vector<KvElement> block(v.block_elements());
    EXPECT_TRUE(e.backend().CopyToHost(block.data(), v.K(b, 0), v.block_bytes()).ok());
    // Only the rows the sequence wrote: positions past the end hold whatever the pool held.
    p.kv.insert(p.kv.end(), block.begin(), block.end());
  }
  const size_t full = tokens.size() / v.block_tokens * v.block_elements();
  p.kv.resize(full);
  e.DestroySequence(seq);
  return p;
}

TEST(CudaEngine, EveryModelShapeAndDtypeGivesTheCpuBits) {
  for (const char* name : {"mha", "gqa", "mqa", "qwen2-bias"}) {
    for (DType dtype :
         {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_1}) {
      SCOPED_TRACE(std::string(name) + " " + DTypeName(dtype));
      const std::string path = WriteModel(name, dtype);
      auto cpu = MakeEngine(path, {});
      auto dev = MakeEngine(path, {TestDevice()});
      ASSERT_TRUE(cpu && dev);
      EXPECT_EQ(dev->numerics_fingerprint(), cpu->numerics_fingerprint());
      const std::vector<int32_t> tokens = Prompt(23, cpu->config().vocab_size);
      const Prefill a = RunPrefill(*cpu, tokens), b = RunPrefill(*dev, tokens);
      EXPECT_TRUE(SameBits(a.logits, b.logits)) << "logits";
      EXPECT_TRUE(SameBits(a.residuals, b.residuals)) << "residuals";
      EXPECT_TRUE(SameBits(a.kv, b.kv)) << "K/V";
      EXPECT_GT(dev->backend().counters().device_launches, 0u);
    }
  }
}

TEST(CudaEngine, PrefillEqualsOneTokenAtATimeOnTheDevice) {
  for (DType dtype : {DType::kF32, DType::kQ4_1}) {
    SCOPED_TRACE(DTypeName(dtype));
    const std::string path = WriteModel("gqa", dtype);
    auto dev = MakeEngine(path, {TestDevice()});
    ASSERT_TRUE(dev);
    const std::vector<int32_t> tokens = Prompt(19, dev->config().vocab_size, 3);
    const Prefill whole = RunPrefill(*dev, tokens);
    const SessionId seq = dev->CreateSequence();
    std::vector<float> logits;
    for (int32_t t : tokens) {
      Engine::Work w{seq, std::span<const int32_t>(&t, 1), false};
      ForwardResult r;
      ASSERT_TRUE(dev->Step(std::span<const Engine::Work>(&w, 1), false, &r).ok());
      logits.insert(logits.end(), r.logits.begin(), r.logits.end());
    }
    EXPECT_TRUE(SameBits(logits, whole.logits));
    EXPECT_EQ(dev->backend().counters().matmul_min_rows, 1u) << "single-row steps ran";
  }
}

TEST(CudaEngine, BatchOfDifferentLengthsEqualsEachAloneOnTheCpu) {
  const std::string path = WriteModel("mqa", DType::kQ8_0);
  auto cpu = MakeEngine(path, {});
  auto dev = MakeEngine(path, {TestDevice()});
  ASSERT_TRUE(cpu && dev);
  const int vocab = cpu->config().vocab_size;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < (Large() ? 16 : 4); ++i)
    prompts.push_back(Prompt(1 + (i * 11) % 17, vocab, i));
  int64_t rows = 0;
  for (const auto& p : prompts) rows += static_cast<int64_t>(p.size());
  std::vector<float> alone;
  for (const auto& p : prompts) {
    const SessionId s = cpu->CreateSequence();
    Engine::Work w{s, p, true};
    ForwardResult r;
    ASSERT_TRUE(cpu->Step(std::span<const Engine::Work>(&w, 1), false, &r).ok());
    alone.insert(alone.end(), r.logits.begin(), r.logits.end());
  }
  std::vector<Engine::Work> work;
  for (const auto& p : prompts) work.push_back(Engine::Work{dev->CreateSequence(), p, true});
  dev->backend().ResetCounters();
  ForwardResult r;
  ASSERT_TRUE(dev->Step(work, false, &r).ok());
  EXPECT_TRUE(SameBits(r.logits, alone));
  EXPECT_EQ(dev->backend().counters().matmul_max_rows, static_cast<uint64_t>(rows)) << "one batch";
}

// Generates `n` tokens greedily (and with seeded sampling) from a prompt; hashes of every logit
// row.
GenerateResult Generate(Engine& e, const std::vector<int32_t>& prompt, int n, bool sample) {
  GenerateParams p;
  p.max_tokens = n;
  p.stop_at_eos = false;
  p.record_logit_hashes = true;
  if (sample) {
    p.sampling.temperature = 0.8f;
    p.sampling.top_k = 20;
    p.sampling.seed = 77;
  }
  const SessionId seq = e.CreateSequence();
  auto r = e.Generate(seq, prompt, p);
  EXPECT_TRUE(r.ok()) << r.status();
  e.DestroySequence(seq);
  return r.ok() ? *r : GenerateResult{};
}

// A one-block hot budget: every older block leaves the pool as a checkpoint and attention rebuilds
// it into a scratch block poisoned with NaN before each rebuild, on the device.
TEST(CudaEngine, BoundedRebuildsIntoPoisonedDeviceBlocksAreExact) {
  const std::string path = WriteModel("qwen2-bias", DType::kQ4_0);
  auto cpu = MakeEngine(path, {});
  ASSERT_TRUE(cpu);
  const std::vector<int32_t> prompt = Prompt(14, cpu->config().vocab_size, 5);
  for (bool sample : {false, true}) {
    const GenerateResult ref = Generate(*cpu, prompt, 40, sample);
    for (const char* form : {"residual", "kv"}) {
      SCOPED_TRACE(std::string(form) + (sample ? " sampled" : " greedy"));
      EngineSpec s{TestDevice(), 4, form, true};
      auto dev = MakeEngine(path, s);
      ASSERT_TRUE(dev);
      const GenerateResult got = Generate(*dev, prompt, 40, sample);
      EXPECT_EQ(got.tokens, ref.tokens);
      EXPECT_EQ(got.logit_hashes, ref.logit_hashes);
      const RebuildCounters& rc = dev->model().rebuild_counters();
      if (std::string(form) == "residual") {
        EXPECT_GT(rc.from_residual, 0u);
      } else {
        EXPECT_GT(rc.from_kv, 0u);
      }
    }
  }
}

TEST(CudaEngine, Stories260KGivesTheCpuTokensAndLogits) {
  const std::string path = testing::Stories260KPath();
  if (path.empty()) GTEST_SKIP() << "stories260K not present (../shared/models): skipped";
  auto cpu = MakeEngine(path, {"cpu", 0, "residual", false, false, 16});
  auto dev = MakeEngine(path, {TestDevice(), 0, "residual", false, false, 16});
  auto bounded = MakeEngine(path, {TestDevice(), 16, "residual", true, false, 16});
  ASSERT_TRUE(cpu && dev && bounded);
  for (const char* text : {"Once upon a time", "The little dog"}) {
    SCOPED_TRACE(text);
    const std::vector<int32_t> prompt = cpu->EncodePrompt(text);
    const GenerateResult ref = Generate(*cpu, prompt, 64, false);
    const GenerateResult got = Generate(*dev, prompt, 64, false);
    EXPECT_EQ(got.tokens, ref.tokens);
    EXPECT_EQ(got.logit_hashes, ref.logit_hashes);
    const GenerateResult b = Generate(*bounded, prompt, 64, false);
    EXPECT_EQ(b.tokens, ref.tokens);
    EXPECT_EQ(b.logit_hashes, ref.logit_hashes);
  }
  EXPECT_GT(bounded->model().rebuild_counters().from_residual, 0u);
}

// A session with a one-block hot budget on the device: within turns its blocks leave as
// checkpoints (a small warm tier sends most of them on to RocksDB); between turns it spills whole
// in each form and comes back from the warm tier or from RocksDB. Every turn equals the CPU's
// unbounded, never-spilled run.
TEST(CudaEngine, SessionSpillsToWarmAndRocksDbAndComesBackExactly) {
  const std::string path = WriteModel("gqa", DType::kQ4_1, 1024);  // room for 20 turns
  const std::vector<std::string> words = {"hi", "a cat story", "and then?", "why", "more", "ok"};
  std::vector<std::string> script;
  // Instrumented (testing::ShortRun), 2 turns: each case still spills and restores once.
  const int turns = Large() ? 20 : testing::ShortRun() ? 2 : 3;
  for (int t = 0; t < turns; ++t) script.push_back(words[t % words.size()]);
  auto run = [&](const std::string& device, int budget, SpillForm form, bool cold,
                 size_t warm_bytes) {
    EngineSpec s{device, budget, form == SpillForm::kKv ? "kv" : "residual", budget > 0};
    s.keep_residuals = true;
    auto e = MakeEngine(path, s);
    testing::TrueOrFail(e != nullptr, "e != nullptr");
    SessionManagerOptions so;
    so.data_dir = testing::MakeTempDir("rsd-cuda-session");
    so.warm_budget_bytes = warm_bytes;
    auto m = SessionManager::Create(e.get(), so);
    testing::OkOrFail(m.status(), "SessionManager::Create");
    auto id = (*m)->OpenOrCreate("s");
    testing::OkOrFail(id.status(), "SessionManager::OpenOrCreate");
    std::vector<std::pair<std::vector<int32_t>, std::vector<uint64_t>>> out;
    std::vector<std::string> from;
    for (size_t t = 0; t < script.size(); ++t) {
      GenerateParams p;
      p.max_tokens = 6;
      p.record_logit_hashes = true;
      if (t % 2 == 1) {
        p.sampling.temperature = 0.8f;
        p.sampling.top_k = 30;
        p.sampling.seed = 500 + t;
      }
      auto r = testing::RunTurn(**m, *id, script[t], p);
      EXPECT_TRUE(r.ok()) << r.status();
      if (!r.ok()) break;
      out.emplace_back(r->generation.tokens, r->generation.logit_hashes);
      from.push_back(r->restored_from);
      if (form != SpillForm::kNone) {
        EXPECT_TRUE((*m)->Spill(*id, form).ok());
        if (cold) {
          EXPECT_TRUE((*m)->DemoteToCold(*id).ok());
        } else if (device != "cpu" && form != SpillForm::kTokens) {
          // On the device the warm tier keeps its blocks in pinned memory (AllocHost).
          EXPECT_GT((*m)->warm_pinned_bytes(), 0u) << "turn " << t;
        }
      }
    }
    if (device != "cpu") EXPECT_GT(e->backend().counters().device_launches, 0u);
    return std::make_pair(out, from);
  };
  const auto ref = run("cpu", 0, SpillForm::kNone, false, 256u << 20).first;
  ASSERT_EQ(ref.size(), script.size());
  // Via RocksDB the warm tier is 4 KiB, so within-turn checkpoints overflow to RocksDB too.
  // Unbounded, a session comes back whole into hot blocks (K/V layers over the transfer stream);
  // with a one-block budget its chunks stay checkpoints rebuilt inside attention.
  struct Case {
    SpillForm form;
    bool cold;
    int budget;
  };
  const Case cases[] = {{SpillForm::kResidual, false, 4},
                        {SpillForm::kKv, true, 4},
                        {SpillForm::kTokens, true, 4},
                        {SpillForm::kKv, false, 0},
                        {SpillForm::kResidual, true, 0}};
  for (const auto& [form, cold, budget] : cases) {
    {
      SCOPED_TRACE(std::string(SpillFormName(form)) + (cold ? " via RocksDB" : " via warm") +
                   " budget " + std::to_string(budget));
      const auto [got, from] = run(TestDevice(), budget, form, cold, cold ? 4096 : 64u << 20);
      ASSERT_EQ(got.size(), ref.size());
      for (size_t t = 0; t < ref.size(); ++t) {
        EXPECT_EQ(got[t].first, ref[t].first) << "turn " << t;
        EXPECT_EQ(got[t].second, ref[t].second) << "turn " << t;
      }
      const std::string want = form == SpillForm::kTokens ? "tokens" : cold ? "cold" : "warm";
      for (size_t t = 1; t < from.size(); ++t) EXPECT_EQ(from[t], want) << "turn " << t;
    }
  }
}

}  // namespace
}  // namespace rsd
