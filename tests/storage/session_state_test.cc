// CheckSessionState: the pure check a worker runs on a session's state before taking it. Blocks are
// encoded here with the codec and headers written from the layout by hand, so a wrong expectation
// in CheckpointHeaderFor shows too.
#include "storage/session_state.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_util.h"

namespace rsd {
namespace {

using ::rsd::testing::StatusIs;
using ::testing::HasSubstr;

// 3 layers, 4-token blocks; K/V rows of 8 floats, residual rows of 16.
StateLayout Layout() {
  StateLayout l;
  l.model_fingerprint = "model-fp";
  l.numerics_fingerprint = "numerics-fp";
  l.block_tokens = 4;
  l.n_layers = 3;
  l.vocab_size = 100;
  l.kv_dim = 8;
  l.d_model = 16;
  l.plan = *LayerPlan::Parse("rrr", 3);
  return l;
}

std::string Block(StateForm form, int layer, int chunk, uint8_t fill) {
  CheckpointHeader h;
  h.form = form;
  h.dtype = form == StateForm::kKv ? ElementType::kF16 : ElementType::kF32;
  h.layer = static_cast<uint32_t>(layer);
  h.first_position = static_cast<uint32_t>(4 * chunk);
  h.n_tokens = 4;
  h.row_elements = form == StateForm::kKv ? 8 : 16;
  h.model_fingerprint = "model-fp";
  h.numerics_fingerprint = "numerics-fp";
  // kv: [2][4][8] halves (128 bytes); residual: [4][16] floats (256 bytes).
  const std::vector<uint8_t> payload(form == StateForm::kKv ? 128 : 256, fill);
  return *EncodeBlock(h, payload, Compression::kNone);
}

// Ten tokens in two turns; two full chunks in plan "krr": layer 0 as K/V, layers 1 and 2 as
// residuals (layer 0's residual would be the token embedding, never stored).
SessionState State() {
  SessionState s;
  s.id = SessionId::Random();
  s.model_fingerprint = "model-fp";
  s.numerics_fingerprint = "numerics-fp";
  s.form = SpillForm::kAuto;
  s.plan = *LayerPlan::Parse("krr", 3);
  s.block_tokens = 4;
  s.n_chunks = 2;
  s.tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  s.turn_ends = {6, 10};
  for (uint32_t c = 0; c < 2; ++c) {
    s.blocks.push_back({0, c, Block(StateForm::kKv, 0, c, 1)});
    s.blocks.push_back({1, c, Block(StateForm::kResidual, 1, c, 2)});
    s.blocks.push_back({2, c, Block(StateForm::kResidual, 2, c, 3)});
  }
  return s;
}

TEST(SessionStateCheck, ASoundStateIsTakenWithItsBlocks) {
  absl::StatusOr<CheckedState> got = CheckSessionState(State(), Layout());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->use_blocks);
  EXPECT_EQ(got->plan.ToString(), "krr");
  EXPECT_EQ(got->report.form, SpillForm::kAuto);
  EXPECT_EQ(got->report.blocks, 6);
  EXPECT_EQ(got->report.payload_bytes, 2 * 128 + 4 * 256);  // two F16 K/V blocks, four residual
  EXPECT_GT(got->report.framing_bytes, 0);
  EXPECT_TRUE(got->report.note.empty());
}

TEST(SessionStateCheck, HeaderForMatchesTheLayout) {
  const CheckpointHeader h = CheckpointHeaderFor(Layout(), StateForm::kKv, 2, 3);
  EXPECT_EQ(h.layer, 2u);
  EXPECT_EQ(h.first_position, 12u);
  EXPECT_EQ(h.n_tokens, 4u);
  EXPECT_EQ(h.row_elements, 8u);
  EXPECT_EQ(h.dtype, ElementType::kF16);
  EXPECT_EQ(CheckpointHeaderFor(Layout(), StateForm::kResidual, 1, 0).row_elements, 16u);
  EXPECT_EQ(CheckpointHeaderFor(Layout(), StateForm::kResidual, 1, 0).dtype, ElementType::kF32);
}

TEST(SessionStateCheck, AnotherVersionOrModelIsRefused) {
  SessionState s = State();
  s.version = 2;
  EXPECT_THAT(CheckSessionState(s, Layout()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("version 2")));
  s = State();
  s.model_fingerprint = "other-model";
  EXPECT_THAT(CheckSessionState(s, Layout()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("other-model")));
}

TEST(SessionStateCheck, ABadLogIsInvalid) {
  SessionState s = State();
  s.turn_ends = {6, 4, 10};
  EXPECT_THAT(CheckSessionState(s, Layout()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("turn 1 ends at 4, not after the previous turn's end 6")));
  // An empty turn (every real turn appends its template's tokens): refused, so that a log of
  // many empty turns cannot make an import write a record per turn.
  s.turn_ends = {6, 6, 10};
  EXPECT_THAT(CheckSessionState(s, Layout()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("turn 1 ends at 6")));
  s.turn_ends = {0, 10};
  EXPECT_THAT(CheckSessionState(s, Layout()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("turn 0 ends at 0")));
  // A log longer than the context here.
  s = State();
  StateLayout small = Layout();
  small.max_tokens = static_cast<int64_t>(s.tokens.size()) - 1;
  EXPECT_THAT(CheckSessionState(s, small), StatusIs(absl::StatusCode::kInvalidArgument,
                                                    HasSubstr("is longer than the context here")));
  small.max_tokens = static_cast<int64_t>(s.tokens.size());
  EXPECT_TRUE(CheckSessionState(s, small).ok());
  s = State();
  s.turn_ends = {6};
  EXPECT_THAT(CheckSessionState(s, Layout()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not end")));
  s = State();
  s.tokens[7] = 100;
  EXPECT_THAT(CheckSessionState(s, Layout()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token 7 of the log is 100")));
}

TEST(SessionStateCheck, AnotherNumericsOrBlockSizeRebuildsFromTokens) {
  for (bool numerics : {true, false}) {
    SessionState s = State();
    if (numerics) {
      s.numerics_fingerprint = "gpu-numerics";
    } else {
      s.block_tokens = 8;
    }
    absl::StatusOr<CheckedState> got = CheckSessionState(s, Layout());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_FALSE(got->use_blocks);
    EXPECT_EQ(got->plan.ToString(), "rrr") << "a session rebuilt here takes this worker's plan";
    EXPECT_EQ(got->report.form, SpillForm::kTokens);
    EXPECT_EQ(got->report.blocks, 0);
    EXPECT_THAT(got->report.note, HasSubstr("rebuilds from its token log"));
  }
}

TEST(SessionStateCheck, ATokenOnlyStateNeedsNoBlocks) {
  SessionState s = State();
  s.form = SpillForm::kTokens;
  s.blocks.clear();
  absl::StatusOr<CheckedState> got = CheckSessionState(s, Layout());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->use_blocks);
  EXPECT_TRUE(got->report.note.empty());
}

TEST(SessionStateCheck, FormsOrChunksThatDoNotFitAreInvalid) {
  SessionState s = State();
  s.plan = *LayerPlan::Parse("kr", 2);
  EXPECT_THAT(CheckSessionState(s, Layout()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("do not fit the model")));
  s = State();
  s.n_chunks = 3;  // 12 tokens of state for a 10-token log
  EXPECT_THAT(CheckSessionState(s, Layout()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("do not fit the model")));
}

TEST(SessionStateCheck, DamagedMisplacedRepeatedOrMissingBlocksAreDataLoss) {
  SessionState s = State();
  s.blocks[4].value[s.blocks[4].value.size() / 2] ^= 0x01;  // layer 1 chunk 1
  EXPECT_THAT(CheckSessionState(s, Layout()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("layer 1 chunk 1")));
  s = State();
  s.blocks[1].chunk = 1;  // layer 1's chunk 0 block claims chunk 1
  EXPECT_THAT(CheckSessionState(s, Layout()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("does not describe that place")));
  s = State();
  s.blocks.push_back(s.blocks[0]);
  EXPECT_THAT(CheckSessionState(s, Layout()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("layer 0 chunk 0")));
  s = State();
  s.blocks.back().layer = 3;  // no such layer
  EXPECT_THAT(CheckSessionState(s, Layout()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("layer 3 chunk 1")));
  s = State();
  s.blocks.erase(s.blocks.begin() + 4);
  EXPECT_THAT(
      CheckSessionState(s, Layout()),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("lacks the block of layer 1 chunk 1")));
  s = State();
  s.blocks[0].value = Block(StateForm::kResidual, 0, 0, 1);  // layer 0 is K/V in the plan
  EXPECT_THAT(CheckSessionState(s, Layout()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("does not describe that place")));
}

}  // namespace
}  // namespace rsd
