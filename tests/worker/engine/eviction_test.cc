// The eviction policies' victim choice on hand-made attention masses, without a model: each
// expectation follows the paper's rule as EngineOptions::evict states it, not the implementation.
// Also the factory's names and its error.
#include "worker/engine/eviction.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_util.h"

namespace rsd {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

constexpr int32_t kOut = -1;      // a chunk not in the pool (a checkpoint)
constexpr int32_t kDropped = -2;  // a chunk a lossy policy dropped
constexpr int32_t kBt = 4;        // tokens per chunk

std::unique_ptr<EvictionPolicy> Policy(const std::string& name) {
  auto p = MakeEvictionPolicy(name);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *std::move(p) : nullptr;
}

// Chunks with `blocks` (>= 0: hot) holding `cached` tokens.
ChunkView View(const std::vector<int32_t>& blocks, int64_t cached) {
  return ChunkView{blocks, static_cast<int32_t>(cached / kBt)};
}

// What the forward does with a probe: adds each chunk's mass of the step.
void Attend(const AttentionProbe& probe, const std::vector<double>& step_mass) {
  ASSERT_NE(probe.mass, nullptr);
  if (probe.mass->size() < step_mass.size()) probe.mass->resize(step_mass.size(), 0.0);
  for (size_t c = 0; c < step_mass.size(); ++c) (*probe.mass)[c] += step_mass[c];
}

TEST(Eviction, FactoryKnowsEveryPolicyAndWhichAreExact) {
  for (const char* name : {"exact", "window", "streaming", "h2o", "tova", "snapkv"}) {
    std::unique_ptr<EvictionPolicy> p = Policy(name);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p->name(), name);
    EXPECT_EQ(p->exact(), std::string(name) == "exact") << name;
  }
}

TEST(Eviction, FactoryRejectsAnUnknownNameListingTheValidOnes) {
  EXPECT_THAT(MakeEvictionPolicy("lru"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "eviction policy 'lru' is not one of exact, window, streaming, h2o, tova, "
                       "snapkv"));
  EXPECT_THAT(MakeEvictionPolicy(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("eviction policy ''")));
}

TEST(Eviction, PositionalPoliciesMeasureNothing) {
  for (const char* name : {"exact", "window", "streaming"}) {
    EvictionState state;
    const AttentionProbe probe = Policy(name)->Observe(state, EvictionStep{0, 8, kBt});
    EXPECT_EQ(probe.mass, nullptr) << name;
  }
}

TEST(Eviction, ExactAndWindowTakeTheOldestFullHotChunk) {
  for (const char* name : {"exact", "window"}) {
    std::unique_ptr<EvictionPolicy> p = Policy(name);
    EvictionState state;
    state.mass = {0, 0, 0, 9, 9};  // attention plays no part
    EXPECT_EQ(p->PickVictim(state, View({10, 11, 12, 13}, 16)), 0) << name;
    // Chunks already out of the pool are passed over.
    EXPECT_EQ(p->PickVictim(state, View({kOut, kDropped, 12, 13}, 16)), 2) << name;
    // Only full chunks may leave: the partial last one never does.
    EXPECT_EQ(p->PickVictim(state, View({kOut, 11, 12}, 10)), 1) << name;
    EXPECT_EQ(p->PickVictim(state, View({kOut, kOut, 12}, 10)), -1) << name;
    EXPECT_EQ(p->PickVictim(state, View({}, 0)), -1) << name;
  }
}

TEST(Eviction, StreamingKeepsTheSinkChunkWhileAnythingElseCanGo) {
  std::unique_ptr<EvictionPolicy> p = Policy("streaming");
  EvictionState state;
  // Chunk 0 holds the attention sinks; the oldest of the rest goes.
  EXPECT_EQ(p->PickVictim(state, View({10, 11, 12, 13}, 16)), 1);
  EXPECT_EQ(p->PickVictim(state, View({10, kDropped, kDropped, 13, 14}, 18)), 3);
  // Nothing else is full: nothing goes, the sinks stay.
  EXPECT_EQ(p->PickVictim(state, View({10, kDropped, 12}, 10)), -1);
  // The sink chunk is the only hot one: it goes last.
  EXPECT_EQ(p->PickVictim(state, View({10, kDropped, kDropped}, 12)), 0);
}

TEST(Eviction, H2oDropsTheLeastAccumulatedMassAndSparesTheNewest) {
  std::unique_ptr<EvictionPolicy> p = Policy("h2o");
  EvictionState state;
  // Every step's attention adds up: chunk 1 was heavy early, chunk 2 is heavy now.
  Attend(p->Observe(state, EvictionStep{0, 12, kBt}), {1.0, 5.0, 0.5});
  Attend(p->Observe(state, EvictionStep{12, 4, kBt}), {1.0, 0.1, 1.0, 0.2});
  Attend(p->Observe(state, EvictionStep{16, 1, kBt}), {1.0, 0.1, 1.0, 0.1, 0.1});
  // Totals: 3.0, 5.2, 2.5, 0.3, 0.1. Chunk 4 holds the partial tail; chunk 3 is the newest full
  // one and is spared although it has the least mass of the full ones.
  const std::vector<int32_t> blocks = {10, 11, 12, 13, 14};
  EXPECT_EQ(p->PickVictim(state, View(blocks, 17)), 2);
  EXPECT_EQ(p->PickVictim(state, View({10, 11, kDropped, 13, 14}, 17)), 0);
  EXPECT_EQ(p->PickVictim(state, View({kDropped, 11, kDropped, 13, 14}, 17)), 1);
  // Only the newest full chunk is left: it goes.
  EXPECT_EQ(p->PickVictim(state, View({kDropped, kDropped, kDropped, 13, 14}, 17)), 3);
  EXPECT_EQ(p->PickVictim(state, View({kDropped, kDropped, kDropped, kDropped, 14}, 17)), -1);
}

TEST(Eviction, H2oTiesGoToTheOlderChunkAndUnseenChunksHaveNoMass) {
  std::unique_ptr<EvictionPolicy> p = Policy("h2o");
  EvictionState state;
  Attend(p->Observe(state, EvictionStep{0, 8, kBt}), {2.0, 2.0});
  EXPECT_EQ(p->PickVictim(state, View({10, 11, 12}, 12)), 0);
  // Chunks the forward never reported (never attended to yet) count as zero mass.
  EXPECT_EQ(p->PickVictim(state, View({10, 11, 12, 13}, 16)), 2);
}

TEST(Eviction, TovaScoresWithTheLatestStepOnly) {
  std::unique_ptr<EvictionPolicy> p = Policy("tova");
  EvictionState state;
  Attend(p->Observe(state, EvictionStep{0, 12, kBt}), {0.1, 9.0, 9.0});
  const std::vector<int32_t> blocks = {10, 11, 12, 13};
  EXPECT_EQ(p->PickVictim(state, View(blocks, 13)), 0);
  // The next step's queries attend to chunk 0 and little to chunk 1: the earlier step's mass is
  // forgotten (H2O would still keep chunk 1).
  Attend(p->Observe(state, EvictionStep{13, 1, kBt}), {3.0, 0.2, 0.5, 0.3});
  EXPECT_EQ(p->PickVictim(state, View(blocks, 14)), 1);
  // The newest full chunk (2) is spared even with the least mass among the rest.
  Attend(p->Observe(state, EvictionStep{14, 1, kBt}), {3.0, 1.0, 0.0, 0.0});
  EXPECT_EQ(p->PickVictim(state, View({10, 11, 12, 13}, 15)), 1);
}

TEST(Eviction, SnapKvScoresOncePerPrefillByItsObservationWindow) {
  std::unique_ptr<EvictionPolicy> p = Policy("snapkv");
  EvictionState state;
  // A prefill of 10 tokens: its last block's worth of tokens (4) is the observation window.
  AttentionProbe probe = p->Observe(state, EvictionStep{0, 10, kBt});
  EXPECT_EQ(probe.window, kBt);
  Attend(probe, {0.7, 0.2, 0.9});
  // A short prefill observes all of its tokens.
  EvictionState short_state;
  EXPECT_EQ(p->Observe(short_state, EvictionStep{0, 3, kBt}).window, 3);
  // Decode steps keep the prefill's scores and measure nothing.
  for (int64_t pos = 10; pos < 21; ++pos) {
    EXPECT_EQ(p->Observe(state, EvictionStep{pos, 1, kBt}).mass, nullptr);
  }
  // 21 tokens: chunks 0-4 are full. The scored ones go lowest first; chunks 3 and 4 were written
  // after the scoring and go after every scored one, the older first; the newest (4) goes last.
  std::vector<int32_t> blocks = {10, 11, 12, 13, 14, 15};
  const std::vector<int32_t> order = {1, 0, 2, 3, 4};
  for (int32_t want : order) {
    ASSERT_EQ(p->PickVictim(state, View(blocks, 21)), want);
    blocks[want] = kDropped;
  }
  EXPECT_EQ(p->PickVictim(state, View(blocks, 21)), -1);
}

TEST(Eviction, SnapKvRescoresOnTheNextPrefill) {
  std::unique_ptr<EvictionPolicy> p = Policy("snapkv");
  EvictionState state;
  Attend(p->Observe(state, EvictionStep{0, 8, kBt}), {0.1, 5.0});
  // A new prompt of 9 tokens (a new turn): every chunk is scored again, the old scores gone.
  Attend(p->Observe(state, EvictionStep{8, 9, kBt}), {4.0, 0.5, 2.0, 3.0, 1.0});
  const std::vector<int32_t> blocks = {10, 11, 12, 13, 14};
  EXPECT_EQ(p->PickVictim(state, View(blocks, 17)), 1);
  EXPECT_EQ(p->PickVictim(state, View({10, kDropped, 12, 13, 14}, 17)), 2);
}

}  // namespace
}  // namespace rsd
