// The worker registry and placement with a fake clock: model filter, cordon, dead after the
// heartbeat timeout, least-loaded choice and its tie-breaks, re-registration.
#include "router/registry.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_util.h"

namespace rsd::router {
namespace {

using ::rsd::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class FakeClock final : public Clock {
 public:
  absl::Time Now() override { return now_; }
  void Advance(absl::Duration d) { now_ += d; }

 private:
  absl::Time now_ = absl::FromUnixSeconds(1700000000);
};

WorkerDescriptor Worker(const std::string& id, const std::string& model, int64_t free_bytes = 1000,
                        int32_t busy = 0) {
  WorkerDescriptor d;
  d.id = id;
  d.address = "127.0.0.1:7" + std::to_string(id.size());
  d.model = model;
  d.model_fingerprint = "fp-" + model;
  d.context_length = 2048;
  d.load.hot_bytes_free = free_bytes;
  d.load.hot_bytes_total = 4000;
  d.load.queue_depth = busy;
  d.serving = true;
  return d;
}

class RegistryTest : public ::testing::Test {
 protected:
  FakeClock clock_;
  Registry registry_{&clock_, absl::Seconds(5)};

  std::string PlaceId(const std::string& model) {
    absl::StatusOr<WorkerSnapshot> w = registry_.Place(model);
    EXPECT_TRUE(w.ok()) << w.status();
    return w.ok() ? w->desc.id : "";
  }
};

TEST_F(RegistryTest, NoWorkersIsUnavailable) {
  EXPECT_THAT(registry_.Place(""),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("no worker has registered")));
  EXPECT_THAT(registry_.Place("m"), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("'m'")));
}

TEST_F(RegistryTest, RegistrationNeedsIdAndAddress) {
  WorkerDescriptor d = Worker("", "m");
  EXPECT_THAT(registry_.Register(d), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("id")));
  d = Worker("w1", "m");
  d.address.clear();
  EXPECT_THAT(registry_.Register(d),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'w1'")));
}

TEST_F(RegistryTest, PlacementFiltersByModel) {
  ASSERT_TRUE(registry_.Register(Worker("a", "llama", 9000)).ok());
  ASSERT_TRUE(registry_.Register(Worker("b", "smol", 10)).ok());
  EXPECT_EQ(PlaceId("smol"), "b");
  EXPECT_EQ(PlaceId("llama"), "a");
  // "" = the first registered model.
  EXPECT_EQ(PlaceId(""), "a");
  EXPECT_THAT(registry_.Place("gpt"),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("unknown model 'gpt'; known: llama, smol")));
}

TEST_F(RegistryTest, EmptyModelFallsToAModelWithAReadyWorker) {
  ASSERT_TRUE(registry_.Register(Worker("a", "llama")).ok());
  ASSERT_TRUE(registry_.Register(Worker("b", "smol")).ok());
  ASSERT_TRUE(registry_.SetCordoned("a", true).ok());
  EXPECT_EQ(PlaceId(""), "b");
}

TEST_F(RegistryTest, LeastLoadedWinsThenFewestPlacedThenId) {
  ASSERT_TRUE(registry_.Register(Worker("c", "m", 500)).ok());
  ASSERT_TRUE(registry_.Register(Worker("a", "m", 900)).ok());
  ASSERT_TRUE(registry_.Register(Worker("b", "m", 900, /*busy=*/2)).ok());
  // Most free bytes; among equals, fewest queued+running.
  EXPECT_EQ(PlaceId("m"), "a");
  // Same load everywhere: fewest placed, then id.
  ASSERT_TRUE(registry_.Heartbeat(Worker("b", "m", 900)));
  ASSERT_TRUE(registry_.Heartbeat(Worker("c", "m", 900)));
  EXPECT_EQ(PlaceId("m"), "b");  // a has one placed already
  EXPECT_EQ(PlaceId("m"), "c");
  EXPECT_EQ(PlaceId("m"), "a");
  absl::StatusOr<WorkerSnapshot> a = registry_.Get("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->sessions_placed, 2);
  registry_.AddPlaced("a", -2);
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(registry_.Heartbeat(Worker(id, "m", 900)));
  EXPECT_EQ(PlaceId("m"), "a");
}

// Issue #15: with a first turn's prefix keys, the worker holding the longest prefix wins unless
// its queue outweighs the reuse (registry.h's cost); the choice is remembered for the next create
// before any heartbeat shows it; a worker out of room gets no credit; without a hint, load decides.
TEST_F(RegistryTest, APrefixHintPlacesWhereThePromptsStateIsWeighedAgainstLoad) {
  const std::string k32(16, 'a'), k64(16, 'b'), k128(16, 'c'), k256(16, 'd');
  PrefixHint hint;
  hint.keys = {{k32, 32}, {k64, 64}, {k128, 128}, {k256, 256}};
  WorkerDescriptor a = Worker("a", "m", 3000), b = Worker("b", "m", 1000);
  b.prefix_keys = {k32, k64, std::string(16, 'z')};  // holds the first 64 tokens
  ASSERT_TRUE(registry_.Register(a).ok());
  ASSERT_TRUE(registry_.Register(b).ok());
  int64_t matched = -1;
  absl::StatusOr<WorkerSnapshot> w = registry_.Place("m", {}, &hint, &matched);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->desc.id, "b");  // by load alone: a
  EXPECT_EQ(matched, 64);
  EXPECT_TRUE(registry_.Get("b")->desc.prefix_keys.empty());  // kept in the index, not snapshots
  EXPECT_EQ(PlaceId("m"), "a");                               // no hint: load
  // The create made b hold the whole prompt (remembered until a heartbeat could show it): 256
  // tokens are worth two queued turns, so one on b does not outweigh them, three do.
  auto beat = [&] {
    ASSERT_TRUE(registry_.Heartbeat(a));
    ASSERT_TRUE(registry_.Heartbeat(b));
  };
  b.load.queue_depth = 1;
  beat();
  EXPECT_EQ(registry_.Place("m", {}, &hint, &matched)->desc.id, "b");
  EXPECT_EQ(matched, 256);
  b.load.queue_depth = 3;
  beat();
  EXPECT_EQ(registry_.Place("m", {}, &hint, &matched)->desc.id, "a");
  EXPECT_EQ(matched, 0);
  // ...and now a is remembered for the prompt: the next one goes there too.
  EXPECT_EQ(registry_.Place("m", {}, &hint, &matched)->desc.id, "a");
  EXPECT_EQ(matched, 256);
  // The memory lasts kRecentPrefixSeconds; after it only heartbeats count.
  b.load.queue_depth = 0;
  b.prefix_keys = {k32, k64, k128};
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(absl::Seconds(kRecentPrefixSeconds / 2.5));
    beat();
  }
  EXPECT_EQ(registry_.Place("m", {}, &hint, &matched)->desc.id, "b");
  EXPECT_EQ(matched, 128);
  // A worker with no room left gets no credit for what it holds.
  b.load.hot_bytes_free = 0;
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(absl::Seconds(kRecentPrefixSeconds / 2.5));
    beat();
  }
  EXPECT_EQ(registry_.Place("m", {}, &hint, &matched)->desc.id, "a");
  EXPECT_EQ(matched, 0);
}

// Issue #13: free bytes are up to a heartbeat old; sessions placed since count against them, so a
// burst of creates spreads; a worker whose health is NOT_SERVING gets none.
TEST_F(RegistryTest, ABurstSpreadsAndANotServingWorkerGetsNothing) {
  ASSERT_TRUE(registry_.Register(Worker("a", "m", 2000)).ok());  // 4000 total, no sessions yet
  ASSERT_TRUE(registry_.Register(Worker("b", "m", 1900)).ok());
  // a's estimate drops by 4000 / 64 = 62 bytes per session placed: 2000, 1938, 1876 < 1900.
  std::map<std::string, int> placed;
  for (int i = 0; i < 64; ++i) ++placed[PlaceId("m")];
  EXPECT_EQ(placed["a"] + placed["b"], 64);
  EXPECT_GE(placed["a"], 30);
  EXPECT_GE(placed["b"], 30);
  // A heartbeat's fresh figures replace the estimate.
  WorkerDescriptor fresh = Worker("a", "m", 3000);
  fresh.load.sessions = 10;  // 1000 bytes used by 10 sessions: 100 a session
  ASSERT_TRUE(registry_.Heartbeat(fresh));
  ASSERT_TRUE(registry_.Heartbeat(Worker("b", "m", 1000)));
  EXPECT_EQ(PlaceId("m"), "a");
  // NOT_SERVING: unhealthy, skipped; healthy again, placed on again.
  WorkerDescriptor stuck = Worker("a", "m", 3000);
  stuck.serving = false;
  ASSERT_TRUE(registry_.Heartbeat(stuck));
  EXPECT_EQ(registry_.Get("a")->state, WorkerState::kUnhealthy);
  EXPECT_STREQ(WorkerStateName(WorkerState::kUnhealthy), "unhealthy");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(PlaceId("m"), "b");
  ASSERT_TRUE(registry_.Heartbeat(Worker("b", "m", 1000)));
  WorkerDescriptor stuck_b = Worker("b", "m", 1000);
  stuck_b.serving = false;
  ASSERT_TRUE(registry_.Heartbeat(stuck_b));
  EXPECT_THAT(registry_.Place("m"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("2 not serving")));
  ASSERT_TRUE(registry_.Heartbeat(Worker("a", "m", 3000)));
  EXPECT_EQ(PlaceId("m"), "a");
}

TEST_F(RegistryTest, CordonedWorkerGetsNoNewSessions) {
  ASSERT_TRUE(registry_.Register(Worker("a", "m", 9000)).ok());
  ASSERT_TRUE(registry_.Register(Worker("b", "m", 10)).ok());
  absl::StatusOr<WorkerSnapshot> a = registry_.SetCordoned("a", true);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->state, WorkerState::kCordoned);
  EXPECT_EQ(PlaceId("m"), "b");
  ASSERT_TRUE(registry_.SetCordoned("b", true).ok());
  EXPECT_THAT(
      registry_.Place("m"),
      StatusIs(absl::StatusCode::kUnavailable,
               HasSubstr("no ready worker serves model 'm' (0 dead, 2 cordoned, 0 not serving)")));
  ASSERT_TRUE(registry_.SetCordoned("a", false).ok());
  EXPECT_EQ(PlaceId("m"), "a");
  EXPECT_THAT(registry_.SetCordoned("zz", true),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("unknown worker 'zz'; known: a, b")));
}

TEST_F(RegistryTest, CordonSurvivesReregistration) {
  ASSERT_TRUE(registry_.Register(Worker("a", "m")).ok());
  ASSERT_TRUE(registry_.SetCordoned("a", true).ok());
  ASSERT_TRUE(registry_.Register(Worker("a", "m")).ok());
  EXPECT_EQ(registry_.Get("a")->state, WorkerState::kCordoned);
}

TEST_F(RegistryTest, DeadAfterHeartbeatTimeout) {
  ASSERT_TRUE(registry_.Register(Worker("a", "m", 9000)).ok());
  ASSERT_TRUE(registry_.Register(Worker("b", "m", 10)).ok());
  clock_.Advance(absl::Seconds(4));
  ASSERT_TRUE(registry_.Heartbeat(Worker("b", "m", 10)));
  clock_.Advance(absl::Seconds(2));  // a: 6 s without a heartbeat; b: 2 s
  absl::StatusOr<WorkerSnapshot> a = registry_.Get("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->state, WorkerState::kDead);
  EXPECT_DOUBLE_EQ(a->seconds_since_heartbeat, 6.0);
  EXPECT_STREQ(WorkerStateName(a->state), "dead");
  EXPECT_EQ(PlaceId("m"), "b");
  // A dead worker's model is not listed; its heartbeat asks it to register again (it may have
  // lost sessions to failover meanwhile), which brings it back.
  ASSERT_EQ(registry_.Models().size(), 1u);
  EXPECT_THAT(registry_.Models()[0].workers, ElementsAre("b"));
  EXPECT_FALSE(registry_.Heartbeat(Worker("a", "m", 9000)));
  EXPECT_EQ(registry_.Get("a")->state, WorkerState::kDead);
  ASSERT_TRUE(registry_.Register(Worker("a", "m", 9000)).ok());
  EXPECT_EQ(registry_.Get("a")->state, WorkerState::kReady);
  EXPECT_EQ(PlaceId("m"), "a");

  clock_.Advance(absl::Seconds(10));
  EXPECT_THAT(registry_.Place("m"), StatusIs(absl::StatusCode::kUnavailable,
                                             HasSubstr("(2 dead, 0 cordoned, 0 not serving)")));
  // A model seen before stays known while its workers are dead: UNAVAILABLE, not NOT_FOUND.
  EXPECT_THAT(registry_.Place(""), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("'m'")));
}

TEST_F(RegistryTest, DrainingIsNotPlacedOnAndUncordonEndsIt) {
  ASSERT_TRUE(registry_.Register(Worker("a", "m", 9000)).ok());
  ASSERT_TRUE(registry_.Register(Worker("b", "m", 10)).ok());
  absl::StatusOr<WorkerSnapshot> a = registry_.SetDraining("a", true);
  ASSERT_TRUE(a.ok());
  EXPECT_STREQ(WorkerStateName(a->state), "draining");
  EXPECT_EQ(PlaceId("m"), "b");
  EXPECT_THAT(registry_.SetDraining("zz", true), StatusIs(absl::StatusCode::kNotFound, HasSubstr("zz")));
  ASSERT_TRUE(registry_.SetCordoned("a", false).ok());
  EXPECT_EQ(registry_.Get("a")->state, WorkerState::kReady);
}

TEST_F(RegistryTest, PickTargetExcludesTheSourceAndOtherFingerprints) {
  ASSERT_TRUE(registry_.Register(Worker("a", "m", 9000)).ok());
  WorkerDescriptor b = Worker("b", "m", 10);
  ASSERT_TRUE(registry_.Register(b).ok());
  WorkerDescriptor c = Worker("c", "m", 5000);
  c.model_fingerprint = "fp-other";
  ASSERT_TRUE(registry_.Register(c).ok());
  ASSERT_TRUE(registry_.Register(Worker("d", "n", 99999)).ok());
  absl::StatusOr<WorkerSnapshot> t = registry_.PickTarget("m", "fp-m", "a");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->desc.id, "b");
  EXPECT_EQ(registry_.PickTarget("m", "", "a")->desc.id, "c");  // most free bytes
  EXPECT_EQ(registry_.Get("b")->sessions_placed, 0);              // counts nothing
  ASSERT_TRUE(registry_.SetCordoned("b", true).ok());
  EXPECT_THAT(registry_.PickTarget("m", "fp-m", "a"),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("no other ready worker serves model 'm' besides 'a'")));
}

TEST_F(RegistryTest, HeartbeatOfUnknownOrChangedWorkerAsksToReregister) {
  EXPECT_FALSE(registry_.Heartbeat(Worker("a", "m")));
  ASSERT_TRUE(registry_.Register(Worker("a", "m")).ok());
  EXPECT_TRUE(registry_.Heartbeat(Worker("a", "m")));
  EXPECT_FALSE(registry_.Heartbeat(Worker("a", "other-model")));
}

TEST_F(RegistryTest, ModelsGroupWorkers) {
  ASSERT_TRUE(registry_.Register(Worker("w2", "smol")).ok());
  ASSERT_TRUE(registry_.Register(Worker("w1", "smol")).ok());
  ASSERT_TRUE(registry_.Register(Worker("w3", "llama")).ok());
  std::vector<ModelSummary> models = registry_.Models();
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[0].name, "llama");
  EXPECT_EQ(models[1].name, "smol");
  EXPECT_EQ(models[1].fingerprint, "fp-smol");
  EXPECT_EQ(models[1].context_length, 2048);
  EXPECT_THAT(models[1].workers, ElementsAre("w1", "w2"));
}

TEST_F(RegistryTest, PlacedCountsSeededBeforeRegistration) {
  // A restarted router seeds counts from its journal before the workers re-register.
  registry_.AddPlaced("a", 3);
  ASSERT_TRUE(registry_.Register(Worker("a", "m")).ok());
  ASSERT_TRUE(registry_.Register(Worker("b", "m")).ok());
  EXPECT_EQ(registry_.Get("a")->sessions_placed, 3);
  EXPECT_EQ(PlaceId("m"), "b");
}

}  // namespace
}  // namespace rsd::router
