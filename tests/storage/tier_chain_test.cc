// The tier chain (warm over cold): overflow moves down, onboard looks from the top and names the
// tier, demotion, eviction and export across tiers, a failing tier's errors passed through
// unmasked, and the same verbs over RocksDB (ColdTier).
#include "storage/tier_chain.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/cold_tier.h"
#include "storage/memory_tier.h"
#include "storage/testing/faulty_tier.h"
#include "storage/warm_tier.h"
#include "tests/support/test_util.h"

namespace rsd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::StatusIs;

BlockKey Key(const SessionId& s, uint32_t layer, uint32_t block) { return {s, layer, block}; }

std::vector<std::pair<BlockKey, std::string>> ExportAll(TierChain& chain, const SessionId& s) {
  std::vector<std::pair<BlockKey, std::string>> out;
  EXPECT_TRUE(chain
                  .Export(s,
                          [&](const BlockKey& k, std::string_view v) {
                            out.emplace_back(k, std::string(v));
                            return absl::OkStatus();
                          })
                  .ok());
  return out;
}

// Warm holds three 100-byte values; the bottom tier is unbounded.
struct TwoTiers {
  TierChain chain;
  WarmTier* warm;
  MemoryTier* cold;
  TwoTiers() {
    auto w = std::make_unique<WarmTier>(3 * WarmTier::Charge(100));
    auto c = std::make_unique<MemoryTier>("cold");
    warm = w.get();
    cold = c.get();
    chain.Add(std::move(w));
    chain.Add(std::move(c));
  }
};

TEST(TierChainTest, OverflowMovesDownAndOnboardNamesTheTier) {
  TwoTiers t;
  const SessionId s = SessionId::Random();
  for (uint32_t b = 0; b < 5; ++b) {
    ASSERT_TRUE(t.chain.Offload(Key(s, 1, b), std::string(100, static_cast<char>('a' + b))).ok());
  }
  // The two oldest went down; every block is still found, from where it is.
  EXPECT_THAT(t.warm->KeysOfSession(s), ElementsAre(Key(s, 1, 2), Key(s, 1, 3), Key(s, 1, 4)));
  for (uint32_t b = 0; b < 5; ++b) {
    const char* from = nullptr;
    absl::StatusOr<std::string> v = t.chain.Onboard(Key(s, 1, b), &from);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(*v, std::string(100, static_cast<char>('a' + b)));
    EXPECT_STREQ(from, b < 2 ? "cold" : "warm") << b;
  }
  EXPECT_THAT(t.chain.Onboard(Key(s, 1, 9)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no tier holds")));
}

TEST(TierChainTest, DemoteEvictAndExportAcrossTiers) {
  TwoTiers t;
  const SessionId s = SessionId::Random(), other = SessionId::Random();
  for (uint32_t b = 0; b < 3; ++b) {
    ASSERT_TRUE(t.chain.Offload(Key(s, 0, b), "s" + std::to_string(b)).ok());
  }
  ASSERT_TRUE(t.chain.Offload(Key(other, 0, 0), "o").ok());
  ASSERT_TRUE(t.chain.Demote(s).ok());
  EXPECT_TRUE(t.warm->KeysOfSession(s).empty());
  EXPECT_EQ(t.warm->KeysOfSession(other).size(), 1u) << "only the session demoted";
  const char* from = nullptr;
  ASSERT_TRUE(t.chain.Onboard(Key(s, 0, 1), &from).ok());
  EXPECT_STREQ(from, "cold");
  // A newer copy in warm shadows the cold one in exports.
  ASSERT_TRUE(t.chain.Offload(Key(s, 0, 1), "fresh").ok());
  auto all = ExportAll(t.chain, s);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].second, "s0");
  EXPECT_EQ(all[1].second, "fresh");
  EXPECT_EQ(all[2].second, "s2");
  // Eviction from a block on, in every tier.
  ASSERT_TRUE(t.chain.EvictSession(s, 1).ok());
  all = ExportAll(t.chain, s);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].first, Key(s, 0, 0));
  ASSERT_TRUE(t.chain.Evict(Key(s, 0, 0)).ok());
  EXPECT_TRUE(ExportAll(t.chain, s).empty());
  EXPECT_EQ(ExportAll(t.chain, other).size(), 1u);
}

TEST(TierChainTest, WithoutABottomTierOverflowIsDropped) {
  TierChain chain;
  chain.Add(std::make_unique<WarmTier>(WarmTier::Charge(10)));
  const SessionId s = SessionId::Random();
  ASSERT_TRUE(chain.Offload(Key(s, 0, 0), std::string(10, 'a')).ok());
  ASSERT_TRUE(chain.Offload(Key(s, 0, 1), std::string(10, 'b')).ok());
  EXPECT_THAT(chain.Onboard(Key(s, 0, 0)), StatusIs(absl::StatusCode::kNotFound, HasSubstr("")));
  EXPECT_TRUE(chain.Onboard(Key(s, 0, 1)).ok());
  // A value bigger than the tier goes straight down: here, nowhere.
  ASSERT_TRUE(chain.Offload(Key(s, 0, 2), std::string(100, 'c')).ok());
  EXPECT_THAT(chain.Onboard(Key(s, 0, 2)), StatusIs(absl::StatusCode::kNotFound, HasSubstr("")));
}

// A tier that fails is not papered over by a lower one: its error comes back as it is.
TEST(TierChainTest, AFailingTiersErrorsComeBackUnmasked) {
  MemoryTier warm_inner("warm");
  TierChain chain;
  auto faulty = std::make_unique<testing::FaultyTier>(&warm_inner);
  testing::FaultyTier* f = faulty.get();
  chain.Add(std::move(faulty));
  chain.Add(std::make_unique<MemoryTier>("cold"));
  const SessionId s = SessionId::Random();
  ASSERT_TRUE(chain.Offload(Key(s, 2, 0), "value-0").ok());
  ASSERT_TRUE(chain.Offload(Key(s, 2, 1), "value-1").ok());
  f->FailOnboard(Key(s, 2, 0), absl::DataLossError("disk says no"));
  EXPECT_THAT(chain.Onboard(Key(s, 2, 0)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("disk says no")));
  f->CorruptOnOnboard(Key(s, 2, 1));
  absl::StatusOr<std::string> v = chain.Onboard(Key(s, 2, 1));
  ASSERT_TRUE(v.ok());
  EXPECT_NE(*v, "value-1") << "one bit flipped on the way out";
  EXPECT_EQ(v->size(), 7u);
  f->FailOffloads(absl::ResourceExhaustedError("full"));
  EXPECT_THAT(chain.Offload(Key(s, 2, 2), "x"),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("full")));
  EXPECT_EQ(f->faults(), 3);
}

TEST(TierChainTest, ColdTierOverRocksDb) {
  auto store = ColdStore::Open(testing::MakeTempDir("rsd-tier-chain"));
  ASSERT_TRUE(store.ok()) << store.status();
  TierChain chain;
  auto w = std::make_unique<WarmTier>(2 * WarmTier::Charge(8));
  WarmTier* warm = w.get();
  chain.Add(std::move(w));
  chain.Add(std::make_unique<ColdTier>(store->get()));
  const SessionId s = SessionId::Random();
  for (uint32_t b = 0; b < 4; ++b) {
    ASSERT_TRUE(chain.Offload(Key(s, 3, b), std::string(8, static_cast<char>('0' + b))).ok());
  }
  EXPECT_EQ(warm->KeysOfSession(s).size(), 2u);
  // The two that overflowed are in RocksDB itself.
  EXPECT_EQ((*store)->GetBlock(Key(s, 3, 0)).value(), std::string(8, '0'));
  EXPECT_EQ((*store)->GetBlock(Key(s, 3, 1)).value(), std::string(8, '1'));
  EXPECT_EQ(*chain.SessionBytes(s, 1), 16u);
  ASSERT_TRUE(chain.Demote(s).ok());
  EXPECT_EQ(ExportAll(chain, s).size(), 4u);
  EXPECT_EQ(*chain.SessionBytes(s, 1), 32u);
  ASSERT_TRUE(chain.EvictSession(s, 2).ok());
  EXPECT_THAT((*store)->GetBlock(Key(s, 3, 2)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("")));
  EXPECT_EQ(ExportAll(chain, s).size(), 2u);
}

}  // namespace
}  // namespace rsd
