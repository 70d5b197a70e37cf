// The warm tier: LRU order, the byte budget, what eviction hands back, per-session erase.
#include "storage/warm_store.h"

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

std::vector<BlockKey> KeysOf(const std::vector<WarmStore::Entry>& entries) {
  std::vector<BlockKey> keys;
  for (const auto& e : entries) keys.push_back(e.key);
  return keys;
}

TEST(WarmStoreTest, PutGetAndCharge) {
  WarmStore store(10000);
  SessionId s = SessionId::Random();
  EXPECT_THAT(store.Put(Key(s, 0, 0), std::string(100, 'a')), IsEmpty());
  EXPECT_EQ(store.bytes_used(), WarmStore::Charge(100));
  EXPECT_EQ(WarmStore::Charge(100), 100 + BlockKey::kEncodedSize);
  EXPECT_EQ(store.Get(Key(s, 0, 0)), std::string(100, 'a'));
  EXPECT_EQ(store.Get(Key(s, 0, 1)), std::nullopt);
  // Replacing a value recharges it; the old value is not reported as evicted.
  EXPECT_THAT(store.Put(Key(s, 0, 0), std::string(50, 'b')), IsEmpty());
  EXPECT_EQ(store.bytes_used(), WarmStore::Charge(50));
  EXPECT_EQ(store.Get(Key(s, 0, 0)), std::string(50, 'b'));
  EXPECT_EQ(store.size(), 1u);
  EXPECT_EQ(store.budget(), 10000u);
}

TEST(WarmStoreTest, EvictsLeastRecentlyUsedFirstAndReturnsIt) {
  const size_t entry = WarmStore::Charge(100);
  WarmStore store(3 * entry);
  SessionId s = SessionId::Random();
  for (uint32_t b = 0; b < 3; ++b) {
    EXPECT_THAT(store.Put(Key(s, 0, b), std::string(100, static_cast<char>('a' + b))), IsEmpty());
  }
  ASSERT_TRUE(store.Get(Key(s, 0, 0)).has_value());  // 0 is now the most recent; 1 the oldest
  std::vector<WarmStore::Entry> evicted = store.Put(Key(s, 0, 3), std::string(100, 'd'));
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0].key, Key(s, 0, 1));
  EXPECT_EQ(evicted[0].value, std::string(100, 'b'));
  // A value twice the size evicts the two oldest, oldest first.
  evicted = store.Put(Key(s, 1, 0), std::string(100 + entry, 'e'));
  EXPECT_THAT(KeysOf(evicted), ElementsAre(Key(s, 0, 2), Key(s, 0, 0)));
  EXPECT_FALSE(store.Contains(Key(s, 0, 0)));
  EXPECT_TRUE(store.Contains(Key(s, 0, 3)));
  EXPECT_LE(store.bytes_used(), store.budget());
}

TEST(WarmStoreTest, ValueLargerThanBudgetComesStraightBack) {
  WarmStore store(1000);
  SessionId s = SessionId::Random();
  EXPECT_THAT(store.Put(Key(s, 0, 0), std::string(10, 'a')), IsEmpty());
  EXPECT_THAT(store.Put(Key(s, 0, 1), std::string(10, 'x')), IsEmpty());
  std::vector<WarmStore::Entry> evicted = store.Put(Key(s, 0, 0), std::string(2000, 'b'));
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0].key, Key(s, 0, 0));
  EXPECT_EQ(evicted[0].value.size(), 2000u);
  // The stale smaller value under the same key is gone; the unrelated entry stays.
  EXPECT_FALSE(store.Contains(Key(s, 0, 0)));
  EXPECT_TRUE(store.Contains(Key(s, 0, 1)));
  EXPECT_EQ(store.bytes_used(), WarmStore::Charge(10));
}

TEST(WarmStoreTest, BudgetIsNeverExceededAndEvictionsAccountForEveryByte) {
  std::mt19937 rng(9);
  WarmStore store(50000);
  std::vector<SessionId> sessions = {SessionId::Random(), SessionId::Random(), SessionId::Random()};
  std::map<BlockKey, std::string> model;  // what should be stored
  for (int i = 0; i < 5000; ++i) {
    BlockKey k = Key(sessions[rng() % 3], static_cast<uint32_t>(rng() % 4),
                     static_cast<uint32_t>(rng() % 16));
    std::string v(rng() % 6000, static_cast<char>(rng()));
    model[k] = v;
    for (WarmStore::Entry& e : store.Put(k, v)) {
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
      std::optional<std::string> got = store.Get(g);
      EXPECT_EQ(got.has_value(), it != model.end());
      if (got.has_value() && it != model.end()) {
        EXPECT_EQ(*got, it->second);
      }
    }
  }
  size_t charged = 0;
  for (const auto& [k, v] : model) {
    charged += WarmStore::Charge(v.size());
    EXPECT_EQ(store.Get(k), v);
  }
  EXPECT_EQ(store.bytes_used(), charged);
  EXPECT_EQ(store.size(), model.size());
}

TEST(WarmStoreTest, EraseAndEraseSession) {
  WarmStore store(100000);
  SessionId a = SessionId::Random(), b = SessionId::Random();
  for (uint32_t layer : {0u, 1u, BlockKey::kNoLayer}) {
    for (uint32_t blk = 0; blk < 3; ++blk) {
      EXPECT_THAT(store.Put(Key(a, layer, blk), "a"), IsEmpty());
      EXPECT_THAT(store.Put(Key(b, layer, blk), "bb"), IsEmpty());
    }
  }
  EXPECT_TRUE(store.Erase(Key(a, 1, 1)));
  EXPECT_FALSE(store.Erase(Key(a, 1, 1)));
  std::vector<BlockKey> keys = store.KeysOfSession(a);
  ASSERT_EQ(keys.size(), 8u);
  EXPECT_EQ(keys.front(), Key(a, 0, 0));
  EXPECT_EQ(keys.back(), Key(a, BlockKey::kNoLayer, 2));
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  EXPECT_EQ(store.EraseSession(a), 8u);
  EXPECT_THAT(store.KeysOfSession(a), IsEmpty());
  EXPECT_EQ(store.KeysOfSession(b).size(), 9u);
  EXPECT_EQ(store.bytes_used(), 9 * WarmStore::Charge(2));
  EXPECT_EQ(store.Take(Key(b, 0, 0)), "bb");
  EXPECT_EQ(store.Take(Key(b, 0, 0)), std::nullopt);
  EXPECT_EQ(store.bytes_used(), 8 * WarmStore::Charge(2));
  EXPECT_EQ(store.EraseSession(SessionId::Random()), 0u);
}

TEST(WarmStoreTest, ConcurrentUseKeepsTheBudget) {
  WarmStore store(200000);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&store, t] {
      std::mt19937 rng(t);
      SessionId s = SessionId::Random();
      for (int i = 0; i < 2000; ++i) {
        BlockKey k{s, static_cast<uint32_t>(rng() % 4), static_cast<uint32_t>(rng() % 32)};
        switch (rng() % 4) {
          case 0:
            (void)store.Get(k);
            break;
          case 1:
            store.Erase(k);
            break;
          default:
            store.Put(k, std::string(rng() % 4000, 'x'));
        }
        if (i % 500 == 0) store.EraseSession(s);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_LE(store.bytes_used(), store.budget());
}

}  // namespace
}  // namespace rsd
