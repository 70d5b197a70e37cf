// The warm tier: LRU order, the byte budget, what eviction hands back, per-session eviction, the
// StateTier verbs, and values kept in a HostArena (a pinned region on GPU workers).
#include "storage/warm_tier.h"

#include <map>
#include <random>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rsd {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

BlockKey Key(const SessionId& s, uint32_t layer, uint32_t block) { return {s, layer, block}; }

// The tests' shorthand for the StateTier verbs.
std::vector<StateTier::Entry> Put(WarmTier& t, const BlockKey& k, std::string v) {
  absl::StatusOr<std::vector<StateTier::Entry>> out = t.Offload(k, std::move(v));
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *std::move(out) : std::vector<StateTier::Entry>{};
}
std::optional<std::string> Get(WarmTier& t, const BlockKey& k) {
  absl::StatusOr<std::string> v = t.Onboard(k);
  if (!v.ok()) {
    EXPECT_EQ(v.status().code(), absl::StatusCode::kNotFound) << v.status();
    return std::nullopt;
  }
  return *std::move(v);
}
bool Erase(WarmTier& t, const BlockKey& k) {
  const bool had = t.Contains(k);
  EXPECT_TRUE(t.Evict(k).ok());
  return had;
}
size_t EraseSession(WarmTier& t, const SessionId& s) {
  const size_t had = t.KeysOfSession(s).size();
  EXPECT_TRUE(t.EvictSession(s).ok());
  return had;
}

std::vector<BlockKey> KeysOf(const std::vector<StateTier::Entry>& entries) {
  std::vector<BlockKey> keys;
  for (const auto& e : entries) keys.push_back(e.key);
  return keys;
}

TEST(WarmTierTest, PutGetAndCharge) {
  WarmTier store(10000);
  SessionId s = SessionId::Random();
  EXPECT_THAT(Put(store, Key(s, 0, 0), std::string(100, 'a')), IsEmpty());
  EXPECT_EQ(store.bytes_used(), WarmTier::Charge(100));
  EXPECT_EQ(WarmTier::Charge(100), 100 + BlockKey::kEncodedSize);
  EXPECT_EQ(Get(store, Key(s, 0, 0)), std::string(100, 'a'));
  EXPECT_EQ(Get(store, Key(s, 0, 1)), std::nullopt);
  // Replacing a value recharges it; the old value is not reported as evicted.
  EXPECT_THAT(Put(store, Key(s, 0, 0), std::string(50, 'b')), IsEmpty());
  EXPECT_EQ(store.bytes_used(), WarmTier::Charge(50));
  EXPECT_EQ(Get(store, Key(s, 0, 0)), std::string(50, 'b'));
  EXPECT_EQ(store.size(), 1u);
  EXPECT_EQ(store.budget(), 10000u);
}

TEST(WarmTierTest, EvictsLeastRecentlyUsedFirstAndReturnsIt) {
  const size_t entry = WarmTier::Charge(100);
  WarmTier store(3 * entry);
  SessionId s = SessionId::Random();
  for (uint32_t b = 0; b < 3; ++b) {
    EXPECT_THAT(Put(store, Key(s, 0, b), std::string(100, static_cast<char>('a' + b))), IsEmpty());
  }
  ASSERT_TRUE(Get(store, Key(s, 0, 0)).has_value());  // 0 is now the most recent; 1 the oldest
  std::vector<StateTier::Entry> evicted = Put(store, Key(s, 0, 3), std::string(100, 'd'));
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0].key, Key(s, 0, 1));
  EXPECT_EQ(evicted[0].value, std::string(100, 'b'));
  // A value twice the size evicts the two oldest, oldest first.
  evicted = Put(store, Key(s, 1, 0), std::string(100 + entry, 'e'));
  EXPECT_THAT(KeysOf(evicted), ElementsAre(Key(s, 0, 2), Key(s, 0, 0)));
  EXPECT_FALSE(store.Contains(Key(s, 0, 0)));
  EXPECT_TRUE(store.Contains(Key(s, 0, 3)));
  EXPECT_LE(store.bytes_used(), store.budget());
}

// Issue #15: a value aliased under another key is held once (its bytes charged once, each key its
// encoded size), each key lives and is evicted on its own, and the bytes go with the last key.
TEST(WarmTierTest, AnAliasSharesTheBytesUntilItsLastKeyGoes) {
  const size_t k = BlockKey::kEncodedSize;
  WarmTier store(2 * WarmTier::Charge(100) + k);
  const SessionId a = SessionId::Random(), b = SessionId::Random(), c = SessionId::Random();
  EXPECT_THAT(Put(store, Key(a, 1, 0), std::string(100, 'x')), IsEmpty());
  absl::StatusOr<std::vector<StateTier::Entry>> pushed = store.Alias(Key(a, 1, 0), Key(b, 1, 0));
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_THAT(*pushed, IsEmpty());
  EXPECT_EQ(store.bytes_used(), WarmTier::Charge(100) + k);
  EXPECT_EQ(Get(store, Key(b, 1, 0)), std::string(100, 'x'));
  EXPECT_EQ(store.Alias(Key(c, 1, 0), Key(b, 1, 1)).status().code(), absl::StatusCode::kNotFound);
  // The first key goes: the bytes stay with the alias.
  EXPECT_TRUE(Erase(store, Key(a, 1, 0)));
  EXPECT_EQ(store.bytes_used(), WarmTier::Charge(100));
  EXPECT_EQ(Get(store, Key(b, 1, 0)), std::string(100, 'x'));
  // Under pressure an alias is evicted like any entry, with its value, oldest first.
  EXPECT_THAT(Put(store, Key(c, 1, 0), std::string(100, 'y')), IsEmpty());
  ASSERT_TRUE(store.Alias(Key(c, 1, 0), Key(a, 1, 0)).ok());  // a's entry again, sharing c's
  EXPECT_EQ(store.bytes_used(), 2 * WarmTier::Charge(100) + k);
  std::vector<StateTier::Entry> evicted = Put(store, Key(c, 2, 0), std::string(100, 'z'));
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0].key, Key(b, 1, 0));
  EXPECT_EQ(evicted[0].value, std::string(100, 'x'));
  EXPECT_LE(store.bytes_used(), store.budget());
  EXPECT_TRUE(Erase(store, Key(c, 1, 0)));
  EXPECT_EQ(Get(store, Key(a, 1, 0)), std::string(100, 'y'));
  EXPECT_EQ(store.bytes_used(), 2 * WarmTier::Charge(100));
  EXPECT_EQ(EraseSession(store, a) + EraseSession(store, c), 2u);
  EXPECT_EQ(store.bytes_used(), 0u);
}

// Issue #15: a value equal to one held under another key (sessions that share a prefix spill
// bit-identical checkpoints of it) shares that buffer, found by content, so it is held once.
TEST(WarmTierTest, EqualValuesUnderManyKeysAreHeldOnce) {
  const size_t k = BlockKey::kEncodedSize;
  WarmTier store(1 << 20);
  std::vector<SessionId> ids;
  for (int i = 0; i < 16; ++i) {
    ids.push_back(SessionId::Random());
    EXPECT_THAT(Put(store, Key(ids.back(), 1, 0), std::string(1000, 'p')), IsEmpty());
    EXPECT_THAT(Put(store, Key(ids.back(), 1, 1), std::string(1000, static_cast<char>('A' + i))),
                IsEmpty());
  }
  EXPECT_EQ(store.bytes_used(), 17 * 1000 + 32 * k);  // the shared value once, 16 own ones
  EXPECT_EQ(store.size(), 32u);
  // Each key reads its bytes; the shared value stays until its last key goes.
  for (int i = 0; i < 15; ++i) EXPECT_EQ(EraseSession(store, ids[i]), 2u);
  EXPECT_EQ(Get(store, Key(ids[15], 1, 0)), std::string(1000, 'p'));
  EXPECT_EQ(store.bytes_used(), 2 * WarmTier::Charge(1000));
  // Overwriting a key with other bytes leaves the others' value alone.
  EXPECT_THAT(Put(store, Key(ids[0], 1, 0), std::string(1000, 'p')), IsEmpty());
  EXPECT_THAT(Put(store, Key(ids[15], 1, 0), std::string(1000, 'q')), IsEmpty());
  EXPECT_EQ(Get(store, Key(ids[0], 1, 0)), std::string(1000, 'p'));
  EXPECT_EQ(Get(store, Key(ids[15], 1, 0)), std::string(1000, 'q'));
  EXPECT_EQ(store.bytes_used(), 3 * WarmTier::Charge(1000));
}

TEST(WarmTierTest, ValueLargerThanBudgetComesStraightBack) {
  WarmTier store(1000);
  SessionId s = SessionId::Random();
  EXPECT_THAT(Put(store, Key(s, 0, 0), std::string(10, 'a')), IsEmpty());
  EXPECT_THAT(Put(store, Key(s, 0, 1), std::string(10, 'x')), IsEmpty());
  std::vector<StateTier::Entry> evicted = Put(store, Key(s, 0, 0), std::string(2000, 'b'));
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0].key, Key(s, 0, 0));
  EXPECT_EQ(evicted[0].value.size(), 2000u);
  // The stale smaller value under the same key is gone; the unrelated entry stays.
  EXPECT_FALSE(store.Contains(Key(s, 0, 0)));
  EXPECT_TRUE(store.Contains(Key(s, 0, 1)));
  EXPECT_EQ(store.bytes_used(), WarmTier::Charge(10));
}

TEST(WarmTierTest, BudgetIsNeverExceededAndEvictionsAccountForEveryByte) {
  std::mt19937 rng(9);
  WarmTier store(50000);
  std::vector<SessionId> sessions = {SessionId::Random(), SessionId::Random(), SessionId::Random()};
  std::map<BlockKey, std::string> model;  // what should be stored
  for (int i = 0; i < 5000; ++i) {
    BlockKey k = Key(sessions[rng() % 3], static_cast<uint32_t>(rng() % 4),
                     static_cast<uint32_t>(rng() % 16));
    std::string v(rng() % 6000, static_cast<char>(rng()));
    model[k] = v;
    for (StateTier::Entry& e : Put(store, k, v)) {
      auto it = model.find(e.key);
      ASSERT_NE(it, model.end());
      EXPECT_EQ(it->second, e.value);  // evicted values are the latest ones
      model.erase(it);
    }
    ASSERT_LE(store.bytes_used(), store.budget());
    if (i % 7 == 0) {
      BlockKey g = Key(sessions[rng() % 3], static_cast<uint32_t>(rng() % 4),
                       static_cast<uint32_t>(rng() % 16));
      auto it = model.find(g);
      std::optional<std::string> got = Get(store, g);
      EXPECT_EQ(got.has_value(), it != model.end());
      if (got.has_value() && it != model.end()) {
        EXPECT_EQ(*got, it->second);
      }
    }
  }
  size_t charged = 0;
  for (const auto& [k, v] : model) {
    charged += WarmTier::Charge(v.size());
    EXPECT_EQ(Get(store, k), v);
  }
  EXPECT_EQ(store.bytes_used(), charged);
  EXPECT_EQ(store.size(), model.size());
}

TEST(WarmTierTest, EraseAndEraseSession) {
  WarmTier store(100000);
  SessionId a = SessionId::Random(), b = SessionId::Random();
  char n = '0';  // distinct values (equal ones would share one buffer)
  for (uint32_t layer : {0u, 1u, BlockKey::kNoLayer}) {
    for (uint32_t blk = 0; blk < 3; ++blk, ++n) {
      EXPECT_THAT(Put(store, Key(a, layer, blk), std::string(1, n)), IsEmpty());
      EXPECT_THAT(Put(store, Key(b, layer, blk), std::string{'b', n}), IsEmpty());
    }
  }
  EXPECT_TRUE(Erase(store, Key(a, 1, 1)));
  EXPECT_FALSE(Erase(store, Key(a, 1, 1)));
  std::vector<BlockKey> keys = store.KeysOfSession(a);
  ASSERT_EQ(keys.size(), 8u);
  EXPECT_EQ(keys.front(), Key(a, 0, 0));
  EXPECT_EQ(keys.back(), Key(a, BlockKey::kNoLayer, 2));
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  EXPECT_EQ(EraseSession(store, a), 8u);
  EXPECT_THAT(store.KeysOfSession(a), IsEmpty());
  EXPECT_EQ(store.KeysOfSession(b).size(), 9u);
  EXPECT_EQ(store.bytes_used(), 9 * WarmTier::Charge(2));
  EXPECT_EQ(store.Take(Key(b, 0, 0)), "b0");
  EXPECT_EQ(store.Take(Key(b, 0, 0)), std::nullopt);
  EXPECT_EQ(store.bytes_used(), 8 * WarmTier::Charge(2));
  EXPECT_EQ(EraseSession(store, SessionId::Random()), 0u);
}

TEST(WarmTierTest, ConcurrentUseKeepsTheBudget) {
  WarmTier store(200000);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&store, t] {
      std::mt19937 rng(t);
      SessionId s = SessionId::Random();
      for (int i = 0; i < 2000; ++i) {
        BlockKey k{s, static_cast<uint32_t>(rng() % 4), static_cast<uint32_t>(rng() % 32)};
        switch (rng() % 4) {
          case 0:
            (void)store.Onboard(k);
            break;
          case 1:
            (void)store.Evict(k);
            break;
          default:
            (void)store.Offload(k, std::string(rng() % 4000, 'x'));
        }
        if (i % 500 == 0) (void)store.EvictSession(s);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_LE(store.bytes_used(), store.budget());
}

TEST(WarmTierTest, EvictSessionFromABlockOnAndExportInKeyOrder) {
  WarmTier store(100000);
  SessionId a = SessionId::Random(), b = SessionId::Random();
  for (uint32_t layer : {1u, 0u}) {
    for (uint32_t blk : {3u, 0u, 2u, 1u}) {
      Put(store, Key(a, layer, blk), std::to_string(layer * 10 + blk));
      Put(store, Key(b, layer, blk), "b");
    }
  }
  ASSERT_TRUE(store.EvictSession(a, 2).ok());  // blocks 2 and 3 of every layer
  std::vector<std::string> seen;
  ASSERT_TRUE(store
                  .Export(a,
                          [&](const BlockKey& k, std::string_view v) {
                            EXPECT_EQ(k.session, a);
                            seen.emplace_back(v);
                            return absl::OkStatus();
                          })
                  .ok());
  EXPECT_THAT(seen, ElementsAre("0", "1", "10", "11"));
  EXPECT_EQ(store.KeysOfSession(b).size(), 8u);
  // A visitor's error stops the export and comes back.
  int calls = 0;
  absl::Status st = store.Export(b, [&](const BlockKey&, std::string_view) {
    return ++calls == 2 ? absl::InternalError("stop") : absl::OkStatus();
  });
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(*store.SessionBytes(b), 8 * WarmTier::Charge(1));
}

// Values live in the arena it is given (a pinned region on GPU workers); when the arena has no
// room they go to the heap, and freed space is reused, coalesced.
TEST(WarmTierTest, ValuesLiveInTheGivenArenaAndFallBackToTheHeap) {
  std::vector<uint8_t> region(4096);
  HostArena arena(region.data(), region.size(), "pinned");
  WarmTier store(100000, &arena);
  SessionId s = SessionId::Random();
  for (uint32_t b = 0; b < 6; ++b) Put(store, Key(s, 0, b), std::string(1000, 'a' + b));
  // 64-byte granules: 1000 bytes take 1024, so four fit in 4096 and two go to the heap.
  EXPECT_EQ(store.allocator_bytes(), 4000u);
  EXPECT_EQ(arena.free_bytes(), 0u);
  for (uint32_t b = 0; b < 6; ++b) EXPECT_EQ(Get(store, Key(s, 0, b)), std::string(1000, 'a' + b));
  ASSERT_TRUE(store.Evict(Key(s, 0, 1)).ok());
  ASSERT_TRUE(store.Evict(Key(s, 0, 2)).ok());  // neighbours: one run of 2048 bytes
  EXPECT_EQ(arena.free_bytes(), 2048u);
  Put(store, Key(s, 1, 0), std::string(2000, 'z'));
  EXPECT_EQ(arena.free_bytes(), 0u) << "the coalesced run holds a 2000-byte value";
  EXPECT_EQ(Get(store, Key(s, 1, 0)), std::string(2000, 'z'));
  ASSERT_TRUE(store.EvictSession(s).ok());
  EXPECT_EQ(arena.free_bytes(), 4096u);
  EXPECT_EQ(store.allocator_bytes(), 0u);
}

}  // namespace
}  // namespace rsd
