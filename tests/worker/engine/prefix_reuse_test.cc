// Prefix reuse (issue #15): a session's first turn whose prompt starts with whole chunks another
// resident session computed starts from their hot blocks, shared. The reused part is exactly the
// whole chunks of the common prefix (a divergence inside a chunk reuses the chunks before it), and
// every generated token and per-step logit hash of the reusing session, and of its next turn,
// equals the same session run alone on a fresh worker; the donor continues undisturbed.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/cold_store.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "tests/support/test_worker.h"
#include "worker/engine/session_manager.h"

namespace rsd {
namespace {

const std::string kShared =
    "Once upon a time a small robot read every story in the library, one page a night. ";

GenerateParams Params(int turn) {
  GenerateParams p;
  p.max_tokens = 6;
  p.record_logit_hashes = true;
  if (turn == 1) {
    p.sampling.temperature = 0.8f;
    p.sampling.top_k = 30;
    p.sampling.seed = 77;
  }
  return p;
}

struct Out {
  std::vector<int32_t> tokens;
  std::vector<uint64_t> hashes;
  int64_t reused = 0;
  std::string from;
};

class PrefixReuse : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* entry = testing::FindSyntheticModel("gqa");
    ASSERT_NE(entry, nullptr);
    const std::string model = testing::MakeTempDir("rsd-prefix-model") + "/gqa.gguf";
    ASSERT_TRUE(testing::SyntheticModel(entry->options).WriteGguf(model).ok());
    engine_.model_path = model;
    engine_.block_tokens = 4;
    engine_.keep_residuals = true;
    engine_.poison_freed_blocks = true;
    engine_.spill_form = "residual";
  }
  static Out Turn(testing::TestWorker& w, const SessionId& id, const std::string& text, int t) {
    absl::StatusOr<TurnResult> r = w.Chat(id, text, Params(t));
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    return {r->generation.tokens, r->generation.logit_hashes, r->reused_tokens, r->restored_from};
  }
  // The session's two turns alone on a fresh worker.
  std::vector<Out> Alone(const std::string& first, const std::string& second) {
    testing::TestWorker w(engine_, {});
    EXPECT_TRUE(w.Start().ok());
    const SessionId id = SessionId::Random();
    EXPECT_TRUE(w.sessions().Create(id, {}).ok());
    return {Turn(w, id, first, 0), Turn(w, id, second, 1)};
  }
  // Tokens of the common prefix of two first-turn prompts, in whole chunks, leaving at least one
  // token of `b` to compute.
  int64_t ExpectedReuse(testing::TestWorker& w, const std::string& a, const std::string& b) {
    const std::vector<int32_t> pa = w.sessions().PromptTokens(a, true);
    const std::vector<int32_t> pb = w.sessions().PromptTokens(b, true);
    const int64_t common =
        std::mismatch(pa.begin(), pa.end(), pb.begin(), pb.end()).first - pa.begin();
    const int64_t bt = engine_.block_tokens;
    return std::min(common / bt, (static_cast<int64_t>(pb.size()) - 1) / bt) * bt;
  }
  void CheckReuse();
  EngineOptions engine_;
};

// Both ways a prefix is copied: in the engine's residual plan where it keeps residual
// checkpoints (restored by a K/V projection), and as K/V where it does not (restored by a copy).
TEST_F(PrefixReuse, AFirstTurnStartsFromAnotherSessionsChunksWithTheSameBits) {
  for (const bool residuals : {true, false}) {
    SCOPED_TRACE(residuals ? "residual checkpoints" : "K/V copies");
    engine_.keep_residuals = residuals;
    engine_.spill_form = residuals ? "residual" : "kv";
    CheckReuse();
  }
}

void PrefixReuse::CheckReuse() {
  const std::string a = kShared + "Who was the robot?";
  const std::string b = kShared + "What did it read last?";
  std::string c = kShared + "Where?";
  c[42] = 'X';  // a divergence in the middle of the shared text
  testing::TestWorker w(engine_, {});
  ASSERT_TRUE(w.Start().ok());
  const SessionId ia = SessionId::Random(), ib = SessionId::Random(), ic = SessionId::Random();
  for (const SessionId& id : {ia, ib, ic}) ASSERT_TRUE(w.sessions().Create(id, {}).ok());

  const Out a1 = Turn(w, ia, a, 0);
  EXPECT_EQ(a1.reused, 0);  // nobody to reuse from yet
  const Out b1 = Turn(w, ib, b, 0);
  const int64_t want_b = ExpectedReuse(w, a, b);
  ASSERT_GE(want_b, 60);  // most of the shared text
  EXPECT_EQ(b1.reused, want_b);
  EXPECT_EQ(b1.from, "prefix");
  const Out c1 = Turn(w, ic, c, 0);
  const int64_t want_c = ExpectedReuse(w, a, c);
  EXPECT_EQ(c1.reused, want_c);
  EXPECT_GT(want_c, 0);
  EXPECT_LT(want_c, want_b);  // only the chunks before the divergence

  const std::vector<Out> ref_b = Alone(b, "and then?");
  const std::vector<Out> ref_c = Alone(c, "and then?");
  const std::vector<Out> ref_a = Alone(a, "and then?");
  EXPECT_EQ(b1.tokens, ref_b[0].tokens);
  EXPECT_EQ(b1.hashes, ref_b[0].hashes);
  EXPECT_EQ(c1.tokens, ref_c[0].tokens);
  EXPECT_EQ(c1.hashes, ref_c[0].hashes);
  // Their next turns, and the donor's, continue exactly.
  const Out b2 = Turn(w, ib, "and then?", 1), c2 = Turn(w, ic, "and then?", 1);
  const Out a2 = Turn(w, ia, "and then?", 1);
  EXPECT_EQ(b2.tokens, ref_b[1].tokens);
  EXPECT_EQ(b2.hashes, ref_b[1].hashes);
  EXPECT_EQ(c2.tokens, ref_c[1].tokens);
  EXPECT_EQ(c2.hashes, ref_c[1].hashes);
  EXPECT_EQ(a2.tokens, ref_a[1].tokens);
  EXPECT_EQ(a2.hashes, ref_a[1].hashes);
  EXPECT_EQ(w.sessions().StateMoves()["reuse/prefix"].count, 2);
  // The reusing session leaves like any other: spilled in the engine's plan and back, exactly.
  ASSERT_TRUE(w.sessions().Spill(ib, SpillForm::kAuto).ok());
  const Out b3 = Turn(w, ib, "more", 1);
  EXPECT_EQ(b3.from, "warm");
  const std::vector<Out> ref_b3 = [&] {
    testing::TestWorker alone(engine_, {});
    EXPECT_TRUE(alone.Start().ok());
    const SessionId id = SessionId::Random();
    EXPECT_TRUE(alone.sessions().Create(id, {}).ok());
    return std::vector<Out>{Turn(alone, id, b, 0), Turn(alone, id, "and then?", 1),
                            Turn(alone, id, "more", 1)};
  }();
  EXPECT_EQ(b3.tokens, ref_b3[2].tokens);
  EXPECT_EQ(b3.hashes, ref_b3[2].hashes);
}

// A spilled donor gives its checkpoints instead of blocks: the new session restores the common
// prefix from them (aliases of the donor's, rebuilt into the pool) instead of prefilling it, and
// answers as alone; a donor spilled to tokens gives nothing; a later turn never reuses.
TEST_F(PrefixReuse, ASpilledDonorGivesItsCheckpointsAndALaterTurnNeverReuses) {
  testing::TestWorker w(engine_, {});
  ASSERT_TRUE(w.Start().ok());
  const SessionId ia = SessionId::Random(), ib = SessionId::Random(), ic = SessionId::Random();
  for (const SessionId& id : {ia, ib, ic}) ASSERT_TRUE(w.sessions().Create(id, {}).ok());
  const std::string a = kShared + "Who?", b = kShared + "Why?";
  Turn(w, ia, a, 0);
  ASSERT_TRUE(w.sessions().Spill(ia, SpillForm::kResidual).ok());
  const Out b1 = Turn(w, ib, b, 0);
  EXPECT_EQ(b1.reused, ExpectedReuse(w, a, b));
  EXPECT_GT(b1.reused, 0);
  EXPECT_EQ(b1.from, "prefix");
  EXPECT_EQ(w.sessions().StateMoves()["reuse/checkpoints"].count, 1);
  EXPECT_EQ(b1.tokens, Alone(b, "x")[0].tokens);
  EXPECT_EQ(b1.hashes, Alone(b, "x")[0].hashes);
  // The donor's own checkpoints are untouched: it comes back and continues exactly.
  const Out a2 = Turn(w, ia, kShared + "Again?", 1);
  EXPECT_EQ(a2.reused, 0);  // a session's second turn extends its own state
  EXPECT_EQ(a2.tokens, Alone(a, kShared + "Again?")[1].tokens);
  // Spilled to tokens, a session has no checkpoints to give (B, the other donor, closes).
  ASSERT_TRUE(w.engine().Resident(ia));
  ASSERT_TRUE(w.sessions().Spill(ia, SpillForm::kTokens).ok());
  ASSERT_TRUE(w.sessions().Close(ib).ok());
  const Out c1 = Turn(w, ic, b, 0);
  EXPECT_EQ(c1.reused, 0);
  EXPECT_EQ(c1.tokens, b1.tokens);
}

// A shared prefix needs no room: in a pool where the reusing turn fits only because its prefix
// is shared, it is admitted without spilling anyone, and the pool holds the prefix once.
TEST_F(PrefixReuse, ASharedPrefixNeedsNoRoomInTheHotPool) {
  engine_.kv_budget_bytes = 40 * 3 * 2 * 4 * 64 * kKvElementBytes;  // 40 blocks of the gqa model
  testing::TestWorker w(engine_, {});
  ASSERT_TRUE(w.Start().ok());
  const SessionId ia = SessionId::Random(), ib = SessionId::Random(), ic = SessionId::Random();
  for (const SessionId& id : {ia, ib, ic}) ASSERT_TRUE(w.sessions().Create(id, {}).ok());
  const std::string b = kShared + "Why?";
  Turn(w, ia, kShared + "Who?", 0);  // the donor
  Turn(w, ic, "The sea was calm.", 0);
  const KvBlockPool& pool = w.engine().pool();
  const int64_t bt = engine_.block_tokens;
  const int64_t shared = ExpectedReuse(w, kShared + "Who?", b) / bt;
  const int64_t prompt = static_cast<int64_t>(w.sessions().PromptTokens(b, true).size());
  const int64_t need = (prompt + Params(0).max_tokens + bt - 1) / bt;
  ASSERT_GT(shared, 0);
  ASSERT_LT(pool.capacity() - pool.used(), need) << "the turn would fit unshared";
  ASSERT_GE(pool.capacity() - pool.used(), need - shared) << "the turn cannot fit even shared";
  const int32_t before = pool.used();

  const Out b1 = Turn(w, ib, b, 0);
  EXPECT_EQ(b1.reused, shared * bt);
  EXPECT_EQ(w.scheduler().stats().spills, 0);
  EXPECT_TRUE(w.engine().Resident(ia));
  EXPECT_TRUE(w.engine().Resident(ic));
  const SequenceMemory mb = w.engine().SequenceMemoryUse(ib);
  EXPECT_EQ(mb.shared_blocks, shared);
  EXPECT_EQ(pool.used(), before + mb.hot_blocks - shared);
  EXPECT_EQ(pool.shared(), shared);
  EXPECT_EQ(b1.tokens, Alone(b, "x")[0].tokens);
  EXPECT_EQ(b1.hashes, Alone(b, "x")[0].hashes);
  // Closing the donor leaves the blocks to the session sharing them; it continues exactly.
  ASSERT_TRUE(w.sessions().Close(ia).ok());
  EXPECT_EQ(pool.shared(), 0);
  EXPECT_EQ(w.engine().SequenceMemoryUse(ib).shared_blocks, 0);
  const Out b2 = Turn(w, ib, "and then?", 1);
  EXPECT_EQ(b2.tokens, Alone(b, "and then?")[1].tokens);
  EXPECT_EQ(b2.hashes, Alone(b, "and then?")[1].hashes);
}

// A session the router closes leaves its leading chunks as a donor for its tenant only; a kept
// prefix is dropped before any session is spilled for room; a clean stop drops it; checkpoints that
// belong to no session (what a crash would leave of a kept prefix) are swept at start.
TEST_F(PrefixReuse, AClosedSessionsPrefixServesItsTenantAndGoesFirstForRoom) {
  SessionManagerOptions so;
  so.data_dir = testing::MakeTempDir("rsd-prefix-keep");
  so.warm_budget_bytes = 1;  // every checkpoint overflows to RocksDB
  testing::TestWorker w(engine_, so);
  ASSERT_TRUE(w.Start().ok());
  const SessionId ia = SessionId::Random(), ib = SessionId::Random(), ic = SessionId::Random();
  ASSERT_TRUE(w.sessions().Create(ia, {}).ok());
  ASSERT_TRUE(w.sessions().Create(ib, {}).ok());
  SessionAttrs other;
  other.tenant = "other";
  ASSERT_TRUE(w.sessions().Create(ic, other).ok());
  const std::string b = kShared + "Why?";
  Turn(w, ia, kShared + "Who?", 0);
  ASSERT_TRUE(w.sessions().Close(ia, /*keep_prefix=*/true).ok());
  EXPECT_EQ(w.sessions().cached_prefixes(), 1);
  EXPECT_FALSE(w.sessions().Contains(ia));
  const Out b1 = Turn(w, ib, b, 0);
  EXPECT_EQ(b1.reused, ExpectedReuse(w, kShared + "Who?", b));
  EXPECT_GT(b1.reused, 0);
  EXPECT_EQ(b1.tokens, Alone(b, "x")[0].tokens);
  EXPECT_EQ(b1.hashes, Alone(b, "x")[0].hashes);
  TurnInput input;
  input.user_text = b;
  EXPECT_EQ(w.sessions().PrefixDonorFor(ic, input).chunks, 0) << "a prefix crossed tenants";
  const SessionId id = SessionId::Random();
  ASSERT_TRUE(w.sessions().Create(id, {}).ok());
  EXPECT_EQ(w.sessions().PrefixDonorFor(id, input).chunks * engine_.block_tokens,
            ExpectedReuse(w, b, b));  // B itself is the best donor now
  ASSERT_TRUE(w.sessions().Close(id).ok());
  // Room: the kept prefix goes first, then sessions.
  absl::StatusOr<bool> made = w.sessions().SpillIdle({});
  ASSERT_TRUE(made.ok() && *made);
  EXPECT_EQ(w.sessions().cached_prefixes(), 0);
  EXPECT_TRUE(w.engine().Resident(ib));
  // A clean stop leaves no kept prefix behind; a crash's leftovers are swept at start.
  ASSERT_TRUE(w.sessions().Close(ib, /*keep_prefix=*/true).ok());
  EXPECT_EQ(w.sessions().cached_prefixes(), 1);
  ASSERT_TRUE(w.Restart().ok());
  EXPECT_EQ(w.sessions().orphans_swept(), 0);
  EXPECT_EQ(w.sessions().session_count(), 1u);  // ic
  w.Stop();
  const SessionId orphan = SessionId::Random();
  {
    absl::StatusOr<std::unique_ptr<ColdStore>> cold = ColdStore::Open(so.data_dir);
    ASSERT_TRUE(cold.ok()) << cold.status();
    ASSERT_TRUE((*cold)->PutBlock(BlockKey{orphan, 1, 0}, "left by a crash").ok());
  }
  ASSERT_TRUE(w.Start().ok());
  EXPECT_EQ(w.sessions().orphans_swept(), 1);
  EXPECT_FALSE(w.sessions().Contains(orphan));
  EXPECT_EQ(w.sessions().session_count(), 1u);
  w.Stop();
  absl::StatusOr<std::unique_ptr<ColdStore>> cold = ColdStore::Open(so.data_dir);
  ASSERT_TRUE(cold.ok()) << cold.status();
  EXPECT_EQ((*cold)->ListSessions()->size(), 1u);
}

}  // namespace
}  // namespace rsd
