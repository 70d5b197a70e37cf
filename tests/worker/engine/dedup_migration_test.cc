// Deduplicated migration and failover (issue #15): a session sent to a worker where another session
// of its tenant holds its leading chunks travels without them (StateHeader.shared_chunks), and a
// failover's token log starts from them instead of re-prefilling. The chunks the target says it
// holds are found by chain keys (HeldChunks) and checked here against a count made from the tokens
// themselves; the payload that travels is exactly the chunks past them; every token and per-step
// logit hash after the move equals the session run alone, and the donor continues undisturbed.
// A target that no longer holds the chunks refuses the stream (ABORTED) and keeps nothing.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/prefix_keys.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"
#include "tests/support/test_worker.h"
#include "worker/engine/session_manager.h"

namespace rsd {
namespace {

using ::testing::HasSubstr;

const std::string kShared =
    "Once upon a time a small robot read every story in the library, one page a night. ";
const std::vector<std::string> kTurns = {kShared + "Who was the robot?", "and then?", "why",
                                         "more"};
constexpr size_t kMoveAfter = 2;  // turns on the source before the move

GenerateParams Params(size_t turn) {
  GenerateParams p;
  p.max_tokens = 6;
  p.record_logit_hashes = true;
  if (turn % 2 == 1) {
    p.sampling.temperature = 0.8f;
    p.sampling.top_k = 30;
    p.sampling.seed = 500 + turn;
  }
  return p;
}

struct Out {
  std::vector<int32_t> tokens;
  std::vector<uint64_t> hashes;
  std::string from;
};

Out Turn(testing::TestWorker& w, const SessionId& id, const std::string& text, size_t t) {
  absl::StatusOr<TurnResult> r = w.Chat(id, text, Params(t));
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return {};
  return {r->generation.tokens, r->generation.logit_hashes, r->restored_from};
}

// The state's chunk keys as a sender computes them.
std::vector<std::string> KeysOf(const SessionState& s) {
  return ChunkKeys(
      ChainRoot(s.model_fingerprint, s.numerics_fingerprint, s.block_tokens, s.attrs.tenant),
      s.tokens, s.block_tokens, s.n_chunks);
}

// What a sender streams when the target holds `chunks`: everything but their blocks.
SessionState WithoutChunks(SessionState s, int32_t chunks) {
  s.shared_chunks = chunks;
  std::erase_if(s.blocks, [&](const SessionState::Block& b) {
    return b.chunk < static_cast<uint32_t>(chunks);
  });
  return s;
}

class DedupMigration : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* entry = testing::FindSyntheticModel("gqa");
    ASSERT_NE(entry, nullptr);
    const std::string model = testing::MakeTempDir("rsd-dedup-model") + "/gqa.gguf";
    ASSERT_TRUE(testing::SyntheticModel(entry->options).WriteGguf(model).ok());
    engine_.model_path = model;
    engine_.block_tokens = 4;
    engine_.keep_residuals = true;
    engine_.poison_freed_blocks = true;
    engine_.spill_form = "residual";
    testing::TestWorker alone(engine_, {});
    ASSERT_TRUE(alone.Start().ok());
    const SessionId id = SessionId::Random();
    ASSERT_TRUE(alone.sessions().Create(id, {}).ok());
    for (size_t t = 0; t < kTurns.size(); ++t) reference_.push_back(Turn(alone, id, kTurns[t], t));
    const SessionId donor = SessionId::Random();
    ASSERT_TRUE(alone.sessions().Create(donor, {}).ok());
    donor_reference_ = {Turn(alone, donor, kShared + "What did it read?", 0),
                        Turn(alone, donor, "go on", 1)};
  }

  // A source worker holding the session after kMoveAfter turns, exported in `form` at epoch 2.
  SessionState Exported(testing::TestWorker& source, const SessionId& id, SpillForm form) {
    SessionAttrs attrs;
    attrs.epoch = 1;
    EXPECT_TRUE(source.sessions().Create(id, attrs).ok());
    for (size_t t = 0; t < kMoveAfter; ++t) {
      EXPECT_EQ(Turn(source, id, kTurns[t], t).tokens, reference_[t].tokens);
    }
    absl::StatusOr<SessionState> state = source.sessions().ExportState(id, form);
    EXPECT_TRUE(state.ok()) << state.status();
    if (!state.ok()) return {};
    state->attrs.epoch = 2;
    return *std::move(state);
  }
  // The leading whole chunks of `state` whose tokens a donor's log starts with (counted from the
  // tokens, not the keys), at most its full chunks.
  static int32_t CommonChunks(testing::TestWorker& w, const SessionId& donor,
                              const SessionState& state) {
    const std::vector<int32_t>& have = w.engine().SequenceTokens(donor);
    const auto mismatch =
        std::mismatch(state.tokens.begin(), state.tokens.end(), have.begin(), have.end()).first;
    const int32_t common =
        static_cast<int32_t>((mismatch - state.tokens.begin()) / state.block_tokens);
    return std::min({common, w.engine().FullChunks(donor), state.n_chunks});
  }
  void Continue(testing::TestWorker& w, const SessionId& id) {
    for (size_t t = kMoveAfter; t < kTurns.size(); ++t) {
      const Out o = Turn(w, id, kTurns[t], t);
      EXPECT_EQ(o.tokens, reference_[t].tokens) << "turn " << t;
      EXPECT_EQ(o.hashes, reference_[t].hashes) << "turn " << t;
      // From the checkpoints, not from a rebuild of the log after one failed to load.
      if (t == kMoveAfter) {
        EXPECT_EQ(o.from, "warm");
      }
    }
  }

  EngineOptions engine_;
  std::vector<Out> reference_, donor_reference_;
};

// Every form, from a donor in the pool and from one spilled to checkpoints.
TEST_F(DedupMigration, OnlyTheChunksTheTargetLacksTravelAndTheSessionContinuesExactly) {
  for (const SpillForm form : {SpillForm::kResidual, SpillForm::kKv, SpillForm::kAuto}) {
    for (const bool donor_spilled : {false, true}) {
      SCOPED_TRACE(absl::StrCat(SpillFormName(form), donor_spilled ? ", donor spilled" : ""));
      testing::TestWorker source(engine_, {}), target(engine_, {});
      ASSERT_TRUE(source.Start().ok());
      ASSERT_TRUE(target.Start().ok());
      const SessionId donor = SessionId::Random(), id = SessionId::Random();
      ASSERT_TRUE(target.sessions().Create(donor, {}).ok());
      EXPECT_EQ(Turn(target, donor, kShared + "What did it read?", 0).tokens,
                donor_reference_[0].tokens);
      if (donor_spilled) {
        ASSERT_TRUE(target.sessions().Spill(donor, SpillForm::kResidual).ok());
      }

      const SessionState state = Exported(source, id, form);
      ASSERT_GT(state.n_chunks, 0);
      const int32_t held = target.sessions().HeldChunks("default", id, KeysOf(state), state.plan);
      if (form == SpillForm::kKv && donor_spilled) {
        // Its residual checkpoints give no K/V without a rebuild: it offers nothing, all travel.
        EXPECT_EQ(held, 0);
        continue;
      }
      EXPECT_EQ(held, CommonChunks(target, donor, state));
      ASSERT_GE(held * state.block_tokens, 60);  // most of the shared text
      ASSERT_LT(held, state.n_chunks);
      // Another tenant holds nothing of it; nor does the session itself count.
      EXPECT_EQ(target.sessions().HeldChunks("other", id, KeysOf(state), state.plan), 0);
      EXPECT_EQ(target.sessions().HeldChunks("default", donor, KeysOf(state), state.plan), 0);

      absl::StatusOr<ImportReport> report =
          target.sessions().ImportState(WithoutChunks(state, held));
      ASSERT_TRUE(report.ok()) << report.status();
      // Each chunk's blocks weigh the same: the payload is exactly the chunks past the held ones.
      const CheckedState whole = *CheckSessionState(state, target.engine().state_layout());
      ASSERT_EQ(whole.report.payload_bytes % state.n_chunks, 0);
      EXPECT_EQ(report->payload_bytes,
                whole.report.payload_bytes / state.n_chunks * (state.n_chunks - held));
      EXPECT_EQ(report->shared_tokens, int64_t{held} * state.block_tokens);
      EXPECT_EQ(target.sessions().StateMoves()["reuse/import"].count, 1);
      Continue(target, id);
      const Out d = Turn(target, donor, "go on", 1);
      EXPECT_EQ(d.tokens, donor_reference_[1].tokens);
      EXPECT_EQ(d.hashes, donor_reference_[1].hashes);
    }
  }
}

TEST_F(DedupMigration, ATargetThatNoLongerHoldsTheChunksRefusesAndKeepsNothing) {
  testing::TestWorker source(engine_, {}), target(engine_, {});
  ASSERT_TRUE(source.Start().ok());
  ASSERT_TRUE(target.Start().ok());
  const SessionId donor = SessionId::Random(), id = SessionId::Random();
  ASSERT_TRUE(target.sessions().Create(donor, {}).ok());
  Turn(target, donor, kShared + "What did it read?", 0);
  const SessionState state = Exported(source, id, SpillForm::kResidual);
  const int32_t held = target.sessions().HeldChunks("default", id, KeysOf(state), state.plan);
  ASSERT_GT(held, 0);
  ASSERT_TRUE(target.sessions().Close(donor).ok());  // gone between the offer and the stream

  EXPECT_THAT(target.sessions().ImportState(WithoutChunks(state, held)).status(),
              testing::StatusIs(absl::StatusCode::kAborted, HasSubstr("send them")));
  EXPECT_FALSE(target.sessions().Contains(id));
  absl::StatusOr<int64_t> cold = target.sessions().ColdBytes(id);
  ASSERT_TRUE(cold.ok());
  EXPECT_EQ(*cold, 0);
  EXPECT_EQ(target.sessions().WarmBytes(id), 0u);
  // A session of another tenant with the very same log does not stand in.
  SessionState stranger = state;
  stranger.id = SessionId::Random();
  stranger.attrs.tenant = "other";
  ASSERT_TRUE(target.sessions().ImportState(stranger).ok());
  EXPECT_EQ(target.sessions().HeldChunks("default", id, KeysOf(state), state.plan), 0);
  EXPECT_EQ(target.sessions().HeldChunks("other", id, KeysOf(stranger), state.plan),
            state.n_chunks);
  EXPECT_THAT(target.sessions().ImportState(WithoutChunks(state, held)).status(),
              testing::StatusIs(absl::StatusCode::kAborted, HasSubstr("tenant 'default'")));
  // A block inside the shared chunks is refused as not belonging there.
  SessionState overlap = WithoutChunks(state, held);
  overlap.blocks.push_back(state.blocks.front());
  EXPECT_THAT(target.sessions().ImportState(overlap).status(),
              testing::StatusIs(absl::StatusCode::kDataLoss, HasSubstr("shared")));
  SessionState too_many = WithoutChunks(state, held);
  too_many.shared_chunks = state.n_chunks + 1;
  EXPECT_THAT(target.sessions().ImportState(too_many).status(),
              testing::StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("chunk")));
  EXPECT_FALSE(target.sessions().Contains(id));
  // Sent whole, as a sender does after ABORTED, it continues exactly.
  absl::StatusOr<ImportReport> report = target.sessions().ImportState(state);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->shared_tokens, 0);  // the blocks came with it
  Continue(target, id);
}

// Failover rebuilds a session from the router's token log: the chunks a session here holds are
// taken, not re-prefilled.
TEST_F(DedupMigration, AFailoverTokenLogStartsFromTheChunksHeldHere) {
  SessionManagerOptions durable;
  durable.data_dir = testing::MakeTempDir("rsd-dedup-target");
  testing::TestWorker source(engine_, {}), target(engine_, durable);
  ASSERT_TRUE(source.Start().ok());
  ASSERT_TRUE(target.Start().ok());
  const SessionId donor = SessionId::Random(), id = SessionId::Random();
  ASSERT_TRUE(target.sessions().Create(donor, {}).ok());
  Turn(target, donor, kShared + "What did it read?", 0);
  const SessionState state = Exported(source, id, SpillForm::kTokens);
  ASSERT_TRUE(state.blocks.empty());
  const int32_t held = CommonChunks(target, donor, [&] {
    SessionState s = state;
    s.n_chunks = static_cast<int32_t>(s.tokens.size() / s.block_tokens);
    return s;
  }());
  ASSERT_GT(held, 0);
  absl::StatusOr<ImportReport> report = target.sessions().ImportState(state);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->shared_tokens, int64_t{held} * state.block_tokens);
  const Out next = Turn(target, id, kTurns[kMoveAfter], kMoveAfter);
  EXPECT_NE(next.from, "tokens");  // from the held chunks' checkpoints and the rest of the log
  EXPECT_EQ(next.tokens, reference_[kMoveAfter].tokens);
  EXPECT_EQ(next.hashes, reference_[kMoveAfter].hashes);
  // Restarted, the worker finds the session with those checkpoints and it continues exactly.
  ASSERT_TRUE(target.Restart().ok());
  for (size_t t = kMoveAfter + 1; t < kTurns.size(); ++t) {
    const Out o = Turn(target, id, kTurns[t], t);
    EXPECT_EQ(o.tokens, reference_[t].tokens) << "turn " << t;
    EXPECT_EQ(o.hashes, reference_[t].hashes) << "turn " << t;
  }
}

}  // namespace
}  // namespace rsd
