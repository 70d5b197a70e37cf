// The state-stream codec: a SessionState survives the trip through its messages field for field;
// a stream that is truncated, reordered, altered or out of order is refused with the status the
// importer reports; the header carries the new owner's epoch.
#include "proto/state_stream.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_util.h"

namespace rsd {
namespace {

using ::rsd::testing::StatusIs;
using ::testing::HasSubstr;

SessionState State() {
  SessionState s;
  s.id = SessionId::Random();
  s.attrs.tenant = "acme";
  s.attrs.epoch = 3;
  s.attrs.ttl_seconds = 60;
  s.attrs.pin = true;
  s.attrs.priority = 2;
  s.model_fingerprint = "model-fp";
  s.numerics_fingerprint = "numerics-fp";
  s.form = SpillForm::kAuto;
  s.plan = *LayerPlan::Parse("krk", 3);
  s.block_tokens = 4;
  s.n_chunks = 1;
  s.tokens = {5, 6, 7, 8};
  s.turn_ends = {2, 4};
  s.blocks = {{0, 0, "block zero"}, {1, 0, "block one"}, {2, 0, std::string(3000, 'x')}};
  return s;
}

std::vector<v1::StateChunk> Encode(const SessionState& s, uint64_t epoch) {
  std::vector<v1::StateChunk> out;
  const absl::Status st = WriteStateStream(s, epoch, [&](const v1::StateChunk& c) {
    out.push_back(c);
    return true;
  });
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

// `refused_at`: the index of the message Add refused (-1 if none).
absl::StatusOr<SessionState> Decode(std::vector<v1::StateChunk> chunks,
                                    StateStreamLimits limits = {}, int* refused_at = nullptr) {
  StateStreamReader reader(limits);
  if (refused_at != nullptr) *refused_at = -1;
  for (size_t i = 0; i < chunks.size(); ++i) {
    absl::Status st = reader.Add(std::move(chunks[i]));
    if (!st.ok()) {
      if (refused_at != nullptr) *refused_at = static_cast<int>(i);
      return st;
    }
  }
  return reader.Finish();
}

TEST(StateStream, RoundTripsEveryFieldWithTheNewEpoch) {
  const SessionState s = State();
  std::vector<v1::StateChunk> chunks = Encode(s, 4);
  ASSERT_EQ(chunks.size(), 5u);  // header, three blocks, trailer
  EXPECT_TRUE(chunks.front().has_header());
  EXPECT_TRUE(chunks.back().has_trailer());
  EXPECT_EQ(chunks.back().trailer().blocks(), 3);
  EXPECT_EQ(chunks.front().header().layer_forms(), "krk");
  EXPECT_EQ(chunks.front().header().form(), "auto");
  absl::StatusOr<SessionState> got = Decode(chunks);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->id, s.id);
  EXPECT_EQ(got->attrs.tenant, "acme");
  EXPECT_EQ(got->attrs.epoch, 4u) << "the header carries the new owner's epoch";
  EXPECT_EQ(got->attrs.ttl_seconds, 60u);
  EXPECT_TRUE(got->attrs.pin);
  EXPECT_EQ(got->attrs.priority, 2);
  EXPECT_EQ(got->model_fingerprint, s.model_fingerprint);
  EXPECT_EQ(got->numerics_fingerprint, s.numerics_fingerprint);
  EXPECT_EQ(got->form, SpillForm::kAuto);
  EXPECT_EQ(got->plan, s.plan);
  EXPECT_EQ(got->block_tokens, 4);
  EXPECT_EQ(got->n_chunks, 1);
  EXPECT_EQ(got->tokens, s.tokens);
  EXPECT_EQ(got->turn_ends, s.turn_ends);
  ASSERT_EQ(got->blocks.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(got->blocks[i].layer, s.blocks[i].layer);
    EXPECT_EQ(got->blocks[i].chunk, s.blocks[i].chunk);
    EXPECT_EQ(got->blocks[i].value, s.blocks[i].value);
  }
}

TEST(StateStream, ATokenOnlyStateHasNoBlocks) {
  SessionState s = State();
  s.form = SpillForm::kTokens;
  s.plan = LayerPlan();
  s.n_chunks = 0;
  s.blocks.clear();
  std::vector<v1::StateChunk> chunks = Encode(s, 1);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].header().layer_forms(), "");
  absl::StatusOr<SessionState> got = Decode(chunks);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->plan.empty());
  EXPECT_EQ(got->tokens, s.tokens);
}

TEST(StateStream, AlteredReorderedOrTruncatedStreamsAreDataLoss) {
  const SessionState s = State();
  std::vector<v1::StateChunk> altered = Encode(s, 4);
  altered[2].mutable_block()->mutable_value()->at(3) ^= 0x01;
  EXPECT_THAT(Decode(altered),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("fails its digest")));
  std::vector<v1::StateChunk> reordered = Encode(s, 4);
  std::swap(reordered[1], reordered[2]);
  EXPECT_THAT(Decode(reordered), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("digest")));
  std::vector<v1::StateChunk> dropped = Encode(s, 4);
  dropped.erase(dropped.begin() + 1);
  EXPECT_THAT(Decode(dropped),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("2 blocks received, 3 sent")));
  std::vector<v1::StateChunk> truncated = Encode(s, 4);
  truncated.pop_back();
  EXPECT_THAT(Decode(truncated), StatusIs(absl::StatusCode::kDataLoss,
                                          HasSubstr(s.id.ToHex() + " ended after 3 blocks")));
  std::vector<v1::StateChunk> header_changed = Encode(s, 4);
  header_changed[0].mutable_header()->set_tokens(0, 9);
  EXPECT_THAT(Decode(header_changed), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("digest")));
}

TEST(StateStream, MessagesOutOfOrderAreInvalid) {
  const SessionState s = State();
  std::vector<v1::StateChunk> no_header = Encode(s, 4);
  no_header.erase(no_header.begin());
  EXPECT_THAT(Decode(no_header),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("starts with its header")));
  std::vector<v1::StateChunk> two_headers = Encode(s, 4);
  two_headers.insert(two_headers.begin() + 1, two_headers[0]);
  EXPECT_THAT(Decode(two_headers),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a second header")));
  std::vector<v1::StateChunk> after_trailer = Encode(s, 4);
  after_trailer.push_back(after_trailer[1]);
  EXPECT_THAT(Decode(after_trailer),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("after the trailer")));
  EXPECT_THAT(Decode({}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("header")));
}

TEST(StateStream, AHeaderThatDoesNotParseIsInvalid) {
  std::vector<v1::StateChunk> bad_id = Encode(State(), 4);
  bad_id[0].mutable_header()->mutable_ref()->set_session_id("not-hex");
  EXPECT_THAT(Decode(bad_id), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not-hex")));
  std::vector<v1::StateChunk> bad_form = Encode(State(), 4);
  bad_form[0].mutable_header()->set_form("zip");
  EXPECT_THAT(Decode(bad_form), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("zip")));
  std::vector<v1::StateChunk> bad_layers = Encode(State(), 4);
  bad_layers[0].mutable_header()->set_layer_forms("kxk");
  EXPECT_THAT(Decode(bad_layers),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'x' is not r or k")));
}

// Issue #13: an importer refuses what it could not hold at the message that shows it, before
// reading the rest (a 400,000-turn log once kept a worker busy for minutes).
TEST(StateStream, StreamsPastTheImportersBoundsAreRefusedAtTheirMessage) {
  const SessionState s = State();  // 4 tokens, 2 turns, 1 chunk of 4 tokens, 3 layers
  StateStreamLimits limits;
  limits.max_tokens = 3;
  int at = 0;
  EXPECT_THAT(Decode(Encode(s, 4), limits, &at),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("a token log of 4 tokens is longer than the context here (3)")));
  EXPECT_EQ(at, 0);
  limits.max_tokens = 4;
  EXPECT_TRUE(Decode(Encode(s, 4), limits).ok());
  std::vector<v1::StateChunk> many_turns = Encode(s, 4);
  for (int i = 0; i < 3; ++i) many_turns[0].mutable_header()->add_turn_ends(4);
  EXPECT_THAT(Decode(many_turns, limits, &at),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("5 turns in a log of 4")));
  EXPECT_EQ(at, 0);
  for (int32_t chunks : {-1, 2}) {
    std::vector<v1::StateChunk> bad_chunks = Encode(s, 4);
    bad_chunks[0].mutable_header()->set_n_chunks(chunks);
    EXPECT_THAT(Decode(bad_chunks, limits, &at),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(absl::StrCat(chunks, " chunks of 4 tokens do not fit"))));
    EXPECT_EQ(at, 0);
  }
  std::vector<v1::StateChunk> extra_block = Encode(s, 4);
  extra_block.insert(extra_block.begin() + 3, extra_block[1]);
  EXPECT_THAT(Decode(extra_block, limits, &at),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("more blocks than its header's chunks and layers hold (3)")));
  EXPECT_EQ(at, 4);
  limits.max_block_bytes = 2999;
  EXPECT_THAT(Decode(Encode(s, 4), limits, &at),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("a block of 3000 bytes; at most 2999 fit here")));
  EXPECT_EQ(at, 3);  // the third block, before the trailer
}

// Deduplicated migration (issue #15): the chunks the importer holds are named in the header and
// their blocks stay out; a header claiming more shared chunks than chunks, or a shared chunk's
// block arriving anyway past the count the header allows, is refused at its message.
TEST(StateStream, SharedChunksTravelWithoutTheirBlocks) {
  SessionState s = State();
  s.tokens = {5, 6, 7, 8, 9, 10, 11, 12};
  s.turn_ends = {2, 8};
  s.n_chunks = 2;
  s.shared_chunks = 1;
  for (auto& b : s.blocks) b.chunk = 1;  // only the second chunk's blocks travel
  absl::StatusOr<SessionState> got = Decode(Encode(s, 4));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->shared_chunks, 1);
  EXPECT_EQ(got->n_chunks, 2);
  EXPECT_EQ(got->blocks.size(), 3u);
  int at = 0;
  for (int32_t shared : {-1, 3}) {
    std::vector<v1::StateChunk> bad = Encode(s, 4);
    bad[0].mutable_header()->set_shared_chunks(shared);
    EXPECT_THAT(Decode(bad, {}, &at),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(absl::StrCat(shared, " shared chunks of 2 chunks"))));
    EXPECT_EQ(at, 0);
  }
  std::vector<v1::StateChunk> extra = Encode(s, 4);
  extra.insert(extra.begin() + 3, extra[1]);  // a fourth block: one chunk of three layers holds 3
  EXPECT_THAT(Decode(extra, {}, &at),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hold (3)")));
  EXPECT_EQ(at, 4);
}

TEST(StateStream, AWriterThatStopsIsCancelled) {
  int writes = 0;
  const absl::Status st = WriteStateStream(State(), 4, [&](const v1::StateChunk&) {
    return ++writes < 2;  // the importer goes after the first block
  });
  EXPECT_THAT(st, StatusIs(absl::StatusCode::kCancelled, HasSubstr("the importer left")));
  EXPECT_EQ(writes, 2);
}

}  // namespace
}  // namespace rsd
