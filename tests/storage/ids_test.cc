// SessionId and BlockKey: randomness, hex round trip, ordering, hashing, key encoding.
#include "storage/common/ids.h"

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/block_key.h"
#include "tests/support/test_util.h"

namespace rsd {
namespace {

using ::rsd::testing::StatusIs;
using ::testing::HasSubstr;

TEST(SessionIdTest, RandomIdsAreDistinctAndNotNil) {
  absl::flat_hash_set<SessionId> seen;
  for (int i = 0; i < 10000; ++i) {
    SessionId id = SessionId::Random();
    EXPECT_FALSE(id.IsNil());
    EXPECT_TRUE(seen.insert(id).second);
  }
  EXPECT_TRUE(SessionId().IsNil());
}

TEST(SessionIdTest, HexRoundTrip) {
  for (int i = 0; i < 100; ++i) {
    SessionId id = SessionId::Random();
    std::string hex = id.ToHex();
    ASSERT_EQ(hex.size(), 32u);
    EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos);
    absl::StatusOr<SessionId> back = ParseSessionId(hex);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, id);
  }
  absl::StatusOr<SessionId> upper = ParseSessionId("00112233445566778899AABBCCDDEEFF");
  ASSERT_TRUE(upper.ok());
  EXPECT_EQ(upper->ToHex(), "00112233445566778899aabbccddeeff");
  EXPECT_EQ(upper->bytes()[0], 0x00);
  EXPECT_EQ(upper->bytes()[15], 0xff);
}

TEST(SessionIdTest, BadTextIsInvalidArgument) {
  EXPECT_THAT(ParseSessionId(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0 characters")));
  EXPECT_THAT(ParseSessionId("0011"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("32 hex")));
  EXPECT_THAT(ParseSessionId("00112233445566778899aabbccddeeff0"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("33 characters")));
  EXPECT_THAT(ParseSessionId("00112233445566778899aabbccddeefg"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("offset 31")));
  EXPECT_THAT(ParseSessionId(" 0112233445566778899aabbccddeeff"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("offset 0")));
  EXPECT_THAT(ParseSessionId(std::string(5000, 'z')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("...")));
}

TEST(SessionIdTest, OrderIsHexOrder) {
  std::vector<SessionId> ids;
  for (int i = 0; i < 200; ++i) ids.push_back(SessionId::Random());
  std::vector<SessionId> by_id = ids;
  std::sort(by_id.begin(), by_id.end());
  std::vector<SessionId> by_hex = ids;
  std::sort(by_hex.begin(), by_hex.end(),
            [](const SessionId& a, const SessionId& b) { return a.ToHex() < b.ToHex(); });
  EXPECT_EQ(by_id, by_hex);
}

TEST(BlockKeyTest, EncodingRoundTripsAndSortsLikeKeys) {
  std::mt19937 rng(3);
  std::vector<SessionId> sessions = {SessionId::Random(), SessionId::Random()};
  std::vector<BlockKey> keys;
  for (int i = 0; i < 500; ++i) {
    const uint32_t layer = rng() % 3 == 0 ? BlockKey::kNoLayer : static_cast<uint32_t>(rng() % 300);
    const uint32_t block = static_cast<uint32_t>(rng() % 3 == 0 ? rng() : rng() % 1000);
    BlockKey k{sessions[rng() % 2], layer, block};
    keys.push_back(k);
    std::optional<BlockKey> back = BlockKey::Decode(k.Encode());
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, k);
  }
  std::vector<BlockKey> by_key = keys;
  std::sort(by_key.begin(), by_key.end());
  std::vector<BlockKey> by_bytes = keys;
  std::sort(by_bytes.begin(), by_bytes.end(),
            [](const BlockKey& a, const BlockKey& b) { return a.Encode() < b.Encode(); });
  EXPECT_EQ(by_key, by_bytes);
  EXPECT_FALSE(BlockKey::Decode("short").has_value());
  EXPECT_EQ(keys[0].Encode().size(), BlockKey::kEncodedSize);
}

TEST(BlockKeyTest, ToStringNamesTheParts) {
  SessionId s = *ParseSessionId("000102030405060708090a0b0c0d0e0f");
  EXPECT_EQ((BlockKey{s, 3, 17}).ToString(), "000102030405060708090a0b0c0d0e0f/L3/B17");
  EXPECT_EQ((BlockKey{s, BlockKey::kNoLayer, 2}).ToString(),
            "000102030405060708090a0b0c0d0e0f/tokens/B2");
}

}  // namespace
}  // namespace rsd
