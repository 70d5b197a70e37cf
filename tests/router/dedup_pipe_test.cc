// The router's deduplicating pipe (issue #15): a source's state stream with the chunks the target
// holds left out reads back, through the importer's own stream reader (digest and counts checked),
// as the same state less those blocks with shared_chunks set; nothing is left out where the target
// holds nothing, for a token-only stream, or past the stream's chunks; a stream whose digest fails
// on the way is refused at its trailer (DATA_LOSS) instead of being re-signed. The offer carries
// one chain key per chunk, the same keys a worker would compute (prefix_keys.h).
#include "router/dedup_pipe.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/common/status.h"
#include "storage/prefix_keys.h"
#include "tests/support/test_util.h"

namespace rsd::router {
namespace {

using ::rsd::testing::StatusIs;
using ::testing::HasSubstr;

SessionState State() {
  SessionState s;
  s.id = SessionId::Random();
  s.attrs.tenant = "acme";
  s.model_fingerprint = "model-fp";
  s.numerics_fingerprint = "numerics-fp";
  s.form = SpillForm::kResidual;
  s.plan = *LayerPlan::Parse("rr", 2);
  s.block_tokens = 4;
  s.n_chunks = 4;
  for (int i = 0; i < 18; ++i) s.tokens.push_back(100 + i);
  s.turn_ends = {10, 18};
  for (uint32_t c = 0; c < 4; ++c) s.blocks.push_back({1, c, "block " + std::to_string(c)});
  return s;
}

std::vector<v1::StateChunk> Encode(const SessionState& s) {
  std::vector<v1::StateChunk> out;
  EXPECT_TRUE(WriteStateStream(s, 7, [&](const v1::StateChunk& c) {
                out.push_back(c);
                return true;
              }).ok());
  return out;
}

// Pipes `in` with the target holding `held` chunks into a reader, as the importer reads it.
absl::StatusOr<SessionState> Pipe(std::vector<v1::StateChunk> in, int32_t held,
                                  int32_t* shared = nullptr) {
  size_t at = 0;
  DedupPipe pipe(
      [&](v1::StateChunk* c) -> absl::StatusOr<bool> {
        if (at == in.size()) return false;
        *c = in[at++];
        return true;
      },
      [&](const v1::StateHeader&) { return held; });
  StateStreamReader reader;
  v1::StateChunk c;
  for (;;) {
    absl::StatusOr<bool> more = pipe.Next(&c);
    if (!more.ok()) return more.status();
    if (!*more) break;
    RSD_RETURN_IF_ERROR(reader.Add(c));
  }
  if (shared != nullptr) *shared = pipe.shared_chunks();
  return reader.Finish();
}

TEST(DedupPipe, TheChunksTheTargetHoldsStayOutAndTheStreamStillChecksOut) {
  const SessionState s = State();
  int32_t shared = 0;
  absl::StatusOr<SessionState> got = Pipe(Encode(s), 3, &shared);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(shared, 3);
  EXPECT_EQ(got->shared_chunks, 3);
  EXPECT_EQ(got->n_chunks, 4);
  EXPECT_EQ(got->tokens, s.tokens);
  ASSERT_EQ(got->blocks.size(), 1u);
  EXPECT_EQ(got->blocks[0].chunk, 3u);
  EXPECT_EQ(got->blocks[0].value, "block 3");
  // Nothing held, or more than the stream's chunks claimed: all of it, or at most its chunks.
  got = Pipe(Encode(s), 0);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->shared_chunks, 0);
  EXPECT_EQ(got->blocks.size(), 4u);
  got = Pipe(Encode(s), 99);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->shared_chunks, 4);
  EXPECT_TRUE(got->blocks.empty());
}

TEST(DedupPipe, AStreamThatFailsItsDigestOnTheWayIsRefusedNotResigned) {
  std::vector<v1::StateChunk> in = Encode(State());
  in[3].mutable_block()->set_value("altered");  // chunk 2, which the target does not hold
  EXPECT_THAT(Pipe(in, 1), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("digest")));
  in = Encode(State());
  in[1].mutable_block()->set_value("altered");  // chunk 0, which would be left out anyway
  EXPECT_THAT(Pipe(in, 1), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("digest")));
}

TEST(DedupPipe, TheOfferNamesEveryChunkAsAWorkerWould) {
  SessionState s = State();
  const v1::StateHeader h = StateHeaderOf(s, 7);
  std::optional<v1::HeldPrefixRequest> offer = HeldPrefixOffer(h);
  ASSERT_TRUE(offer.has_value());
  EXPECT_EQ(offer->tenant(), "acme");
  EXPECT_EQ(offer->session_id(), s.id.ToHex());
  EXPECT_EQ(offer->layer_forms(), "rr");
  const std::vector<std::string> keys =
      ChunkKeys(ChainRoot("model-fp", "numerics-fp", 4, "acme"), s.tokens, 4, 4);
  ASSERT_EQ(offer->keys_size(), 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(offer->keys(i), keys[i]);
  s.form = SpillForm::kTokens;
  EXPECT_FALSE(HeldPrefixOffer(StateHeaderOf(s, 7)).has_value());
}

}  // namespace
}  // namespace rsd::router
