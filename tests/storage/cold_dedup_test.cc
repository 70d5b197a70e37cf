// The cold store keeps each distinct block value once (issue #15): keys with the same bytes refer
// to one stored value with a count. Checked here: the counters against values counted by the test
// itself (distinct bytes, compared, not hashed); aliases and overwrites; a hash collision (staged
// by writing raw records) keeping both values; crashes at random points of puts, aliases and
// deletes (drop-unsynced file system) leaving no key without its value and no value without a
// key; and the sweep at open repairing what only damage could leave (an orphan value, a key whose
// value is missing, a wrong count).
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/cold_store.h"
#include "storage/common/hash.h"
#include "storage/testing/drop_unsynced_fs.h"
#include "storage/testing/sst_damage.h"
#include "tests/support/test_util.h"

namespace rsd {
namespace {

using ::rsd::testing::StatusIs;

std::string Value(int i, size_t size = 3000) {
  std::string v(size, '\0');
  std::mt19937 rng(static_cast<uint32_t>(i));
  for (char& c : v) c = static_cast<char>(rng());
  return v;
}

class ColdDedup : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = rsd::testing::MakeTempDir("cold_dedup_test");
    fs_ = std::make_shared<DropUnsyncedFs>();
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  void Open() {
    store_.reset();
    ColdStoreOptions o;
    o.file_system = fs_;
    absl::StatusOr<std::unique_ptr<ColdStore>> s = ColdStore::Open(root_ + "/" + db_, o);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  void Crash() {
    absl::StatusOr<DropUnsyncedFs::DropStats> dropped = fs_->DropUnsyncedData();
    ASSERT_TRUE(dropped.ok()) << dropped.status();
    store_.reset();
    fs_->Reactivate();
  }
  // The counters the store should report, from every key's bytes (distinct values by content).
  ColdStore::ContentStats Counted() {
    std::set<std::string> distinct;
    ColdStore::ContentStats c;
    absl::StatusOr<std::vector<SessionId>> ids = store_->ListSessions();
    EXPECT_TRUE(ids.ok()) << ids.status();
    for (const SessionId& id : *ids) {
      const absl::Status st =
          store_->ForEachBlock(id, [&](const BlockKey& key, std::string_view v) {
            c.references++;
            c.referenced_bytes += static_cast<int64_t>(v.size());
            if (distinct.insert(std::string(v)).second) c.bytes += static_cast<int64_t>(v.size());
            // The point lookup agrees with the scan.
            absl::StatusOr<std::string> got = store_->GetBlock(key);
            EXPECT_TRUE(got.ok() && *got == v) << key.ToString() << " " << got.status();
            return absl::OkStatus();
          });
      EXPECT_TRUE(st.ok()) << st;  // no key refers to a missing value
    }
    c.values = static_cast<int64_t>(distinct.size());
    return c;
  }
  void ExpectCounters() {
    const ColdStore::ContentStats want = Counted(), got = store_->content_stats();
    EXPECT_EQ(got.values, want.values);
    EXPECT_EQ(got.bytes, want.bytes);
    EXPECT_EQ(got.references, want.references);
    EXPECT_EQ(got.referenced_bytes, want.referenced_bytes);
  }

  std::string root_;
  std::string db_ = "db";
  std::shared_ptr<DropUnsyncedFs> fs_;
  std::unique_ptr<ColdStore> store_;
};

TEST_F(ColdDedup, SixteenSessionsHoldASharedPrefixOnce) {
  Open();
  std::vector<SessionId> ids;
  for (int s = 0; s < 16; ++s) {
    ids.push_back(SessionId::Random());
    for (uint32_t c = 0; c < 5; ++c) {
      for (uint32_t l = 0; l < 3; ++l) {
        // Chunks 0..3 are the shared prefix (the same bytes in every session), chunk 4 is its own.
        const int which = c < 4 ? static_cast<int>(c * 3 + l) : 1000 + s * 3 + static_cast<int>(l);
        ASSERT_TRUE(store_->PutBlock({ids.back(), l, c}, Value(which)).ok());
      }
    }
  }
  ColdStore::ContentStats st = store_->content_stats();
  // A session's bytes count its blocks in full, shared or not (without reading them).
  EXPECT_EQ(*store_->SessionBlockBytes(ids[3]), 15 * 3000);
  EXPECT_EQ(st.values, 12 + 16 * 3);
  EXPECT_EQ(st.bytes, (12 + 16 * 3) * 3000);
  EXPECT_EQ(st.references, 16 * 15);
  ExpectCounters();
  // Reopened, the sweep counts the same and repairs nothing.
  Open();
  EXPECT_EQ(store_->content_stats().values, st.values);
  EXPECT_EQ(store_->content_stats().references, st.references);
  EXPECT_EQ(store_->swept_at_open().orphan_values, 0);
  EXPECT_EQ(store_->swept_at_open().dangling_keys, 0);
  EXPECT_EQ(store_->swept_at_open().fixed_counts, 0);
  // The prefix stays while one session refers to it.
  for (int s = 0; s < 15; ++s) ASSERT_TRUE(store_->DeleteSession(ids[s]).ok());
  EXPECT_EQ(store_->content_stats().values, 12 + 3);
  EXPECT_EQ(store_->content_stats().references, 15);
  ASSERT_EQ(*store_->GetBlock({ids[15], 2, 3}), Value(11));
  ExpectCounters();
  ASSERT_TRUE(store_->DeleteSession(ids[15]).ok());
  EXPECT_EQ(store_->content_stats().values, 0);
  EXPECT_EQ(store_->content_stats().bytes, 0);
}

TEST_F(ColdDedup, AliasesOverwritesAndDeletesKeepTheCountsTrue) {
  Open();
  const SessionId a = SessionId::Random(), b = SessionId::Random();
  ASSERT_TRUE(store_->PutBlock({a, 1, 0}, Value(1)).ok());
  ASSERT_TRUE(store_->AliasBlock({a, 1, 0}, {b, 1, 0}).ok());
  EXPECT_EQ(store_->content_stats().values, 1);
  EXPECT_EQ(store_->content_stats().references, 2);
  EXPECT_EQ(*store_->GetBlock({b, 1, 0}), Value(1));
  EXPECT_THAT(store_->AliasBlock({a, 9, 9}, {b, 9, 9}),
              StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("not found")));
  // The same bytes again under a key: nothing changes; other bytes: the old value loses a key.
  ASSERT_TRUE(store_->PutBlock({b, 1, 0}, Value(1)).ok());
  EXPECT_EQ(store_->content_stats().references, 2);
  ASSERT_TRUE(store_->PutBlock({b, 1, 0}, Value(2)).ok());
  EXPECT_EQ(store_->content_stats().values, 2);
  EXPECT_EQ(store_->content_stats().references, 2);
  ASSERT_TRUE(store_->DeleteBlock({a, 1, 0}).ok());
  ASSERT_TRUE(store_->DeleteBlock({a, 1, 0}).ok());  // absent: OK, nothing counted twice
  EXPECT_EQ(store_->content_stats().values, 1);
  ExpectCounters();
  // A session deleted with keep_blocks leaves its blocks (and their counts) to their owner.
  ASSERT_TRUE(store_->DeleteSession(b, /*keep_blocks=*/true).ok());
  EXPECT_EQ(store_->content_stats().references, 1);
  ExpectCounters();
}

// Two different values with one hash cannot be made on purpose (XXH3-128), so the collision is
// staged: the count and value records of the new bytes' hash are written raw, holding other
// bytes. The write compares the bytes and keeps its own under its key.
TEST_F(ColdDedup, AHashCollisionKeepsBothValues) {
  Open();
  const std::string mine = Value(7), other = Value(8);
  Hasher h;
  h.Update(mine);
  const std::string hash = h.Digest();
  std::string count(16, '\0');
  const uint64_t refs = 1, bytes = other.size();
  std::memcpy(count.data(), &refs, 8);
  std::memcpy(count.data() + 8, &bytes, 8);
  ASSERT_TRUE(store_->RawPutForTest(ColdStore::Table::kContent, "v" + hash, other).ok());
  ASSERT_TRUE(store_->RawPutForTest(ColdStore::Table::kContent, "n" + hash, count).ok());
  const SessionId s = SessionId::Random();
  ASSERT_TRUE(store_->PutBlock({s, 0, 0}, mine).ok());
  EXPECT_EQ(*store_->GetBlock({s, 0, 0}), mine);
  EXPECT_EQ(*store_->RawGetForTest(ColdStore::Table::kContent, "v" + hash), other);
}

// Kill -9 (power loss: unsynced writes dropped) at random points of puts, aliases, deletes and
// session deletes across sessions sharing values: after every restart each key reads its value,
// every stored value has a key, and the counters equal the count from the keys. Four stores of
// three crashes each (each restart replays the WAL into a new table file; past three, RocksDB
// compacts in the background while the simulated power loss cuts the files, which this file
// system wrapper does not model).
TEST_F(ColdDedup, CrashesAtRandomPointsLeaveNoMissingAndNoOrphanValue) {
  std::mt19937 rng(20261207);
  std::vector<SessionId> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(SessionId::Random());
  int64_t ops = 0;
  for (int round = 0; round < 12; ++round) {
    SCOPED_TRACE(round);
    db_ = "db" + std::to_string(round / 3);
    Open();
    EXPECT_EQ(store_->swept_at_open().orphan_values, 0);
    EXPECT_EQ(store_->swept_at_open().dangling_keys, 0);
    EXPECT_EQ(store_->swept_at_open().fixed_counts, 0);
    ExpectCounters();
    const int n = 5 + static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i, ++ops) {
      const SessionId& s = ids[rng() % ids.size()];
      const BlockKey key{s, static_cast<uint32_t>(rng() % 3), static_cast<uint32_t>(rng() % 3)};
      const BlockKey other{ids[rng() % ids.size()], key.layer, key.block};
      switch (rng() % 6) {
        case 0:
        case 1:
          ASSERT_TRUE(store_->PutBlock(key, Value(static_cast<int>(rng() % 5), 2000)).ok());
          break;
        case 2: {
          const absl::Status st = store_->AliasBlock(other, key);
          ASSERT_TRUE(st.ok() || absl::IsNotFound(st)) << st;
          break;
        }
        case 3:
          ASSERT_TRUE(store_->DeleteBlock(key).ok());
          break;
        case 4:
          ASSERT_TRUE(store_->DeleteSession(s).ok());  // synced: the WAL up to here survives
          break;
        default:
          ASSERT_TRUE(store_->PutMeta(s, "meta").ok());  // synced likewise
      }
    }
    ExpectCounters();
    Crash();
  }
  std::printf("%lld operations over 12 crashes\n", static_cast<long long>(ops));
}

// What only damage (not a crash) could leave: a value no key refers to, a key whose value is gone,
// a count that is wrong. The sweep at open finds and repairs each.
TEST_F(ColdDedup, TheSweepAtOpenRepairsOrphansDanglingKeysAndCounts) {
  Open();
  const SessionId s = SessionId::Random();
  ASSERT_TRUE(store_->PutBlock({s, 0, 0}, Value(1)).ok());
  ASSERT_TRUE(store_->PutBlock({s, 0, 1}, Value(2)).ok());
  ASSERT_TRUE(store_->AliasBlock({s, 0, 1}, {s, 0, 2}).ok());
  const auto hash_of = [](const std::string& v) {
    Hasher h;
    h.Update(v);
    return h.Digest();
  };
  // An orphan value, the value {s,0,0} refers to deleted, and {s,0,1}'s count set to 7.
  ASSERT_TRUE(
      store_->RawPutForTest(ColdStore::Table::kContent, "v" + hash_of(Value(3)), Value(3)).ok());
  ASSERT_TRUE(store_->RawDeleteForTest(ColdStore::Table::kContent, "v" + hash_of(Value(1))).ok());
  std::string seven(16, '\0');
  const uint64_t refs = 7, bytes = 3000;
  std::memcpy(seven.data(), &refs, 8);
  std::memcpy(seven.data() + 8, &bytes, 8);
  ASSERT_TRUE(
      store_->RawPutForTest(ColdStore::Table::kContent, "n" + hash_of(Value(2)), seven).ok());
  EXPECT_THAT(store_->GetBlock({s, 0, 0}),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("missing")));
  Open();
  EXPECT_EQ(store_->swept_at_open().orphan_values, 1);
  EXPECT_EQ(store_->swept_at_open().dangling_keys, 1);
  EXPECT_EQ(store_->swept_at_open().fixed_counts, 1);
  // The key without its value is gone (its session rebuilds it, as after any lost block).
  EXPECT_THAT(store_->GetBlock({s, 0, 0}),
              StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("not found")));
  EXPECT_EQ(*store_->GetBlock({s, 0, 2}), Value(2));
  ExpectCounters();
  EXPECT_EQ(store_->content_stats().references, 2);
  EXPECT_EQ(store_->content_stats().values, 1);
  // Nothing left to repair.
  Open();
  EXPECT_EQ(store_->swept_at_open().orphan_values + store_->swept_at_open().dangling_keys +
                store_->swept_at_open().fixed_counts,
            0);
}

// A flipped byte in a table file of block keys or of values (a stopped worker's disk): the store
// opens (the sweep, which cannot read every block, repairs nothing and says so), the block whose
// key or value sits in the damaged file is DATA_LOSS (its session rebuilds from its token log),
// and the others read intact.
TEST_F(ColdDedup, ADamagedTableFileCostsOnlyTheBlocksInIt) {
  for (const char* family : {"blocks", "content"}) {
    SCOPED_TRACE(family);
    db_ = std::string("damaged-") + family;
    Open();
    std::vector<SessionId> ids;
    for (int i = 0; i < 3; ++i) {
      ids.push_back(SessionId::Random());
      ASSERT_TRUE(store_->PutBlock({ids.back(), 1, 0}, Value(i)).ok());
      ASSERT_TRUE(store_->Flush().ok());  // each block in table files of its own
    }
    store_.reset();
    absl::StatusOr<std::vector<std::string>> files =
        testing::SstFilesOfFamily(root_ + "/" + db_, family);
    ASSERT_TRUE(files.ok()) << files.status();
    ASSERT_EQ(files->size(), 3u);
    ASSERT_TRUE(testing::FlipByte((*files)[1], 5).ok());
    Open();
    EXPECT_TRUE(store_->sweep_failed());
    EXPECT_EQ(store_->swept_at_open().orphan_values + store_->swept_at_open().dangling_keys, 0);
    EXPECT_THAT(store_->GetBlock({ids[1], 1, 0}),
                StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("block")));
    for (int i : {0, 2}) {
      absl::StatusOr<std::string> got = store_->GetBlock({ids[i], 1, 0});
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, Value(i));
    }
    store_.reset();
  }
}

}  // namespace
}  // namespace rsd
