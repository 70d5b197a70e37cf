// Shared hot blocks (issue #15): the pool counts references; sessions that start from another's
// prefix point at its blocks, held once; a write into a shared block copies it first, so neither
// side sees the other's tokens.
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend_factory.h"
#include "storage/kv_block_pool.h"
#include "storage/prefix_keys.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "tests/support/test_worker.h"
#include "worker/engine/engine.h"

namespace rsd {
namespace {

TEST(KvBlockPoolRefs, ABlockIsFreeOnlyWhenItsLastReferenceGoes) {
  BackendOptions bo;
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(bo);
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto pool = KvBlockPool::Create(backend->get(), 2, 8, 4, 3 * 2 * 2 * 8 * 4 * kKvElementBytes);
  ASSERT_TRUE(pool.ok()) << pool.status();
  KvBlockPool& p = **pool;
  ASSERT_EQ(p.capacity(), 3);
  const int32_t a = *p.Allocate(), b = *p.Allocate();
  p.Retain(a);
  p.Retain(a);
  EXPECT_EQ(p.refs(a), 3);
  EXPECT_EQ(p.used(), 2);
  EXPECT_EQ(p.shared(), 1);
  EXPECT_EQ(p.saved(), 2);
  EXPECT_FALSE(p.Free(a));
  EXPECT_FALSE(p.Free(a));
  EXPECT_EQ(p.shared(), 0);
  EXPECT_EQ(p.saved(), 0);
  EXPECT_TRUE(p.Free(a));
  EXPECT_EQ(p.used(), 1);
  const int32_t c = *p.Allocate(), d = *p.Allocate();
  EXPECT_FALSE(p.Allocate().ok());  // full: b, c, d
  EXPECT_TRUE(p.Free(b));
  EXPECT_TRUE(p.Free(c));
  EXPECT_TRUE(p.Free(d));
  EXPECT_EQ(p.used(), 0);
}

// Chain keys (routing hints): the key of n chunks depends on every token through them and on the
// fingerprints, block size and tenant, nothing after; summaries are at 1, 2, 4, ... chunks.
TEST(PrefixKeys, AKeyNamesEveryTokenThroughItsChunkAndNothingAfter) {
  std::vector<int32_t> t(100);
  for (int i = 0; i < 100; ++i) t[i] = i * 7 % 50;
  const std::string root = ChainRoot("model", "numerics", 8, "t");
  const std::vector<std::string> keys = PowerOfTwoPrefixKeys(root, t, 8, 100);
  ASSERT_EQ(keys.size(), 4u);  // 1, 2, 4, 8 chunks of the 12 whole ones
  for (const std::string& k : keys) EXPECT_EQ(k.size(), 16u);
  std::vector<int32_t> u = t;
  u[20] = 49;  // inside chunk 2 (tokens 16..23)
  u.resize(70);
  const std::vector<std::string> other = PowerOfTwoPrefixKeys(root, u, 8, 100);
  ASSERT_EQ(other.size(), 4u);
  EXPECT_EQ(other[0], keys[0]);
  EXPECT_EQ(other[1], keys[1]);
  EXPECT_NE(other[2], keys[2]);
  EXPECT_NE(other[3], keys[3]);
  EXPECT_EQ(PowerOfTwoPrefixKeys(root, t, 8, 3).size(), 2u);  // at most 3 chunks: 1 and 2
  for (const std::string& r :
       {ChainRoot("model2", "numerics", 8, "t"), ChainRoot("model", "numerics2", 8, "t"),
        ChainRoot("model", "numerics", 16, "t"), ChainRoot("modeln", "umerics", 8, "t"),
        ChainRoot("model", "numerics", 8, "u")}) {
    EXPECT_NE(r, root);
    EXPECT_NE(PowerOfTwoPrefixKeys(r, t, 8, 100)[0], keys[0]);
  }
}

class SharedBlocks : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* entry = testing::FindSyntheticModel("gqa");
    ASSERT_NE(entry, nullptr);
    testing::SyntheticModelOptions o = entry->options;
    o.context_length = 2048;
    model_ = testing::MakeTempDir("rsd-shared-model") + "/gqa.gguf";
    ASSERT_TRUE(testing::SyntheticModel(o).WriteGguf(model_).ok());
  }
  EngineOptions Options(int block_tokens) const {
    EngineOptions e;
    e.model_path = model_;
    e.block_tokens = block_tokens;
    e.keep_residuals = true;
    e.poison_freed_blocks = true;
    return e;
  }
  static std::vector<int32_t> Tokens(int n, int salt) {
    std::vector<int32_t> t;
    for (int i = 0; i < n; ++i) t.push_back(3 + (i * 37 + salt * 11) % 300);
    return t;
  }
  // Feeds `tokens` to `id` in one step; the logits of every token.
  static std::vector<float> Feed(Engine& e, const SessionId& id, std::vector<int32_t> tokens) {
    Engine::Work w{id, tokens, /*all_logits=*/true};
    ForwardResult fr;
    EXPECT_TRUE(e.Step(std::span<const Engine::Work>(&w, 1), false, &fr).ok());
    return fr.logits;
  }
  std::vector<std::vector<uint8_t>> Payloads(Engine& e, const SessionId& id, int32_t chunks) {
    std::vector<std::vector<uint8_t>> out;
    for (int32_t c = 0; c < chunks; ++c) {
      for (int l = 0; l < e.config().n_layers; ++l) out.push_back(*e.ChunkPayload(id, c, l, true));
    }
    return out;
  }
  // Every distinct value among the sessions' stored blocks (compared as bytes), the keys, and the
  // distinct values of the prompt's chunks (below `shared_chunks`).
  struct Distinct {
    int64_t values = 0, bytes = 0, keys = 0, prompt_values = 0;
  };
  static Distinct CountDistinct(testing::TestWorker& w, const std::vector<SessionId>& ids,
                                int64_t shared_chunks) {
    std::set<std::string> seen;
    Distinct d;
    for (const SessionId& id : ids) {
      EXPECT_TRUE(w.engine()
                      .tiers()
                      .Export(id,
                              [&](const BlockKey& key, std::string_view v) {
                                ++d.keys;
                                if (seen.insert(std::string(v)).second) {
                                  d.bytes += static_cast<int64_t>(v.size());
                                  d.prompt_values += key.block < shared_chunks;
                                }
                                return absl::OkStatus();
                              })
                      .ok());
    }
    d.values = static_cast<int64_t>(seen.size());
    return d;
  }
  // The sessions spilled in the engine's plan: the warm tier holds each distinct value once (its
  // bytes used = those values and every key); demoted to RocksDB, the store's counters equal the
  // distinct values, and every session keeps a key for each of the prompt's values, stored once.
  static void ExpectOnceInEachTier(testing::TestWorker& w, const std::vector<SessionId>& ids,
                                   int64_t shared_chunks) {
    for (const SessionId& id : ids) ASSERT_TRUE(w.sessions().Spill(id, SpillForm::kAuto).ok());
    const Distinct warm = CountDistinct(w, ids, shared_chunks);
    ASSERT_GT(warm.prompt_values, 0);
    EXPECT_EQ(static_cast<int64_t>(w.sessions().warm_bytes()),
              warm.bytes + warm.keys * static_cast<int64_t>(BlockKey::kEncodedSize));
    ColdStore& cold = *w.sessions().cold_for_test();
    EXPECT_EQ(cold.content_stats().values, 0);
    for (const SessionId& id : ids) ASSERT_TRUE(w.sessions().DemoteToCold(id).ok());
    EXPECT_EQ(w.sessions().warm_bytes(), 0u);
    const Distinct d = CountDistinct(w, ids, shared_chunks);
    const ColdStore::ContentStats st = cold.content_stats();
    EXPECT_EQ(st.values, d.values);
    EXPECT_EQ(st.bytes, d.bytes);
    EXPECT_EQ(st.references, d.keys);
    EXPECT_EQ(d.keys - d.values, 15 * d.prompt_values);
    std::printf(
        "%lld keys, %lld distinct values: warm %.1f MiB, RocksDB %.1f MiB (%.1f MiB saved)\n",
        static_cast<long long>(d.keys), static_cast<long long>(st.values), warm.bytes / 1048576.0,
        st.bytes / 1048576.0, (st.referenced_bytes - st.bytes) / 1048576.0);
  }
  std::string model_;
};

// B shares A's first six chunks, rolls back into the sixth and writes other tokens there: B gets
// its own copy of that block first. A's blocks keep their bits, and B's logits equal a sequence
// fed the same history alone (memcmp).
TEST_F(SharedBlocks, AWriteIntoASharedBlockCopiesItFirst) {
  absl::StatusOr<std::unique_ptr<Engine>> made = Engine::Create(Options(4));
  ASSERT_TRUE(made.ok()) << made.status();
  Engine& e = **made;
  const std::vector<int32_t> p = Tokens(30, 1), q = Tokens(9, 2);
  const SessionId a = e.CreateSequence();
  Feed(e, a, p);
  const std::vector<std::vector<uint8_t>> before = Payloads(e, a, 6);
  const SessionId b = SessionId::Random();
  absl::StatusOr<int64_t> copied = e.SharePrefixOf(b, a, std::span<const int32_t>(p).first(24), 6);
  ASSERT_TRUE(copied.ok()) << copied.status();
  EXPECT_GT(*copied, 0);  // its residual checkpoints (keep_residuals)
  EXPECT_EQ(e.pool().shared(), 6);
  EXPECT_EQ(e.SequenceMemoryUse(b).shared_blocks, 6);
  EXPECT_FALSE(e.WritesIntoSharedBlock(b));  // its next token starts a chunk of its own
  ASSERT_TRUE(e.TruncateSequence(b, 22).ok());
  EXPECT_EQ(e.pool().shared(), 6);  // a rollback writes nothing
  EXPECT_TRUE(e.WritesIntoSharedBlock(b));  // admission counts the copy's block
  const int32_t used = e.pool().used();
  const std::vector<float> got = Feed(e, b, q);
  EXPECT_EQ(e.pool().shared(), 5);
  EXPECT_EQ(e.pool().used(), used + 3);  // the copy, and two chunks for the rest of q
  EXPECT_FALSE(e.WritesIntoSharedBlock(b));
  EXPECT_NE(e.SequenceBlocks(b)[5], e.SequenceBlocks(a)[5]);
  EXPECT_EQ(Payloads(e, a, 6), before);

  std::vector<int32_t> history(p.begin(), p.begin() + 22);
  const SessionId r = e.CreateSequence();
  Feed(e, r, history);
  const std::vector<float> want = Feed(e, r, q);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
  // B spills and comes back from its own checkpoints; A continues unchanged.
  ASSERT_TRUE(e.Spill(b, e.layer_plan()).ok());
  ASSERT_TRUE(e.Restore(b).ok());
  EXPECT_EQ(Payloads(e, b, 7), Payloads(e, r, 7));
  EXPECT_EQ(Payloads(e, a, 6), before);
}

// Sixteen sessions whose first turns start with one 1,000-token prompt hold its blocks once in the
// hot pool (asserted from the pool's counters) and, spilled, once in the warm tier and, demoted,
// once in RocksDB (asserted from the tiers' counters against the distinct values the test finds),
// share it again in the pool when they come back, and answer as they would alone.
TEST_F(SharedBlocks, SixteenSessionsHoldASharedPromptOnce) {
  SessionManagerOptions durable;
  durable.data_dir = testing::MakeTempDir("rsd-shared-cold");
  testing::TestWorker w(Options(16), durable);
  ASSERT_TRUE(w.Start().ok());
  std::string system;
  for (int i = 0; w.sessions().PromptTokens(system, true).size() < 1000; ++i) {
    system += "rule " + std::to_string(i) + ": be brief and kind. ";
  }
  GenerateParams params;
  params.max_tokens = 4;
  params.record_logit_hashes = true;
  const int64_t bt = 16;
  std::vector<SessionId> ids;
  std::vector<TurnResult> results;
  for (int i = 0; i < 16; ++i) {
    ids.push_back(SessionId::Random());
    ASSERT_TRUE(w.sessions().Create(ids.back(), {}).ok());
    absl::StatusOr<TurnResult> r =
        w.Chat(ids.back(), system + "question " + std::to_string(i) + "?", params);
    ASSERT_TRUE(r.ok()) << r.status();
    results.push_back(*r);
  }
  const int64_t shared = results[1].reused_tokens / bt;
  EXPECT_GE(shared * bt, 992);
  const KvBlockPool& pool = w.engine().pool();
  EXPECT_EQ(pool.shared(), shared);
  int64_t held = 0;
  for (int i = 0; i < 16; ++i) {
    if (i > 0) {
      EXPECT_EQ(results[i].reused_tokens, shared * bt) << i;
    }
    const SequenceMemory m = w.engine().SequenceMemoryUse(ids[i]);
    EXPECT_EQ(m.shared_blocks, shared) << i;
    held += m.hot_blocks;
  }
  // Every session's own blocks plus the prompt's, once.
  EXPECT_EQ(pool.used(), held - 15 * shared);
  EXPECT_EQ(pool.saved(), 15 * shared);
  ExpectOnceInEachTier(w, ids, shared);
  // Back from RocksDB for a second turn: the first to return rebuilds the prompt's blocks, the
  // others share them again (not rebuilt), so the pool holds them once as before.
  std::vector<TurnResult> second;
  for (int i = 0; i < 16; ++i) {
    absl::StatusOr<TurnResult> r = w.Chat(ids[i], "and then?", params);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->restored_from, "cold") << i;
    second.push_back(*r);
  }
  EXPECT_EQ(pool.shared(), shared);
  held = 0;
  for (int i = 0; i < 16; ++i) held += w.engine().SequenceMemoryUse(ids[i]).hot_blocks;
  EXPECT_EQ(pool.used(), held - 15 * shared);
  EXPECT_EQ(w.sessions().StateMoves()["reuse/restore"].count, 15);
  for (int i : {0, 1, 15}) {
    testing::TestWorker alone(Options(16), {});
    ASSERT_TRUE(alone.Start().ok());
    const SessionId id = SessionId::Random();
    ASSERT_TRUE(alone.sessions().Create(id, {}).ok());
    absl::StatusOr<TurnResult> r =
        alone.Chat(id, system + "question " + std::to_string(i) + "?", params);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(results[i].generation.tokens, r->generation.tokens) << i;
    EXPECT_EQ(results[i].generation.logit_hashes, r->generation.logit_hashes) << i;
    r = alone.Chat(id, "and then?", params);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(second[i].generation.tokens, r->generation.tokens) << i;
    EXPECT_EQ(second[i].generation.logit_hashes, r->generation.logit_hashes) << i;
  }
}

}  // namespace
}  // namespace rsd
