// Durability of the token log under a simulated power loss (DropUnsyncedFs): a synced turn
// survives, and the same test without the sync loses the turn, so the test can tell.
#include <cstdio>
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/cold_store.h"
#include "storage/testing/drop_unsynced_fs.h"
#include "tests/support/test_util.h"

namespace rsd {
namespace {

using ::rsd::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class DurabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = rsd::testing::MakeTempDir("cold_durability_test");
    fs_ = std::make_shared<DropUnsyncedFs>();
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  void Open(bool sync) {
    ColdStoreOptions options;
    options.file_system = fs_;
    options.sync = sync;
    absl::StatusOr<std::unique_ptr<ColdStore>> s = ColdStore::Open(root_ + "/db", options);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  // Power loss while the store is open: unsynced bytes vanish, then the process dies (the store
  // is destroyed while every write fails) and the machine restarts.
  DropUnsyncedFs::DropStats Crash() {
    absl::StatusOr<DropUnsyncedFs::DropStats> stats = fs_->DropUnsyncedData();
    EXPECT_TRUE(stats.ok()) << stats.status();
    store_.reset();
    fs_->Reactivate();
    if (!stats.ok()) return {};
    std::printf("power loss: %d files truncated (%llu bytes), %d files deleted\n",
                stats->files_truncated, static_cast<unsigned long long>(stats->bytes_dropped),
                stats->files_deleted);
    return *stats;
  }

  std::string root_;
  std::shared_ptr<DropUnsyncedFs> fs_;
  std::unique_ptr<ColdStore> store_;
};

TEST_F(DurabilityTest, SyncedTurnsSurvivePowerLossAndUnsyncedBlocksDoNot) {
  SessionId s = SessionId::Random();
  Open(/*sync=*/true);
  ASSERT_TRUE(store_->PutMeta(s, "meta").ok());
  for (uint32_t t = 0; t < 3; ++t) {
    ASSERT_TRUE(store_->AppendTokens(s, t, std::vector<int32_t>{int32_t(t), 100}).ok());
  }
  const int64_t syncs = fs_->file_syncs();
  EXPECT_GE(syncs, 4);  // the WAL was fsynced for every acknowledged write
  // More writes after the last sync, not synced: checkpoint blocks.
  for (uint32_t b = 0; b < 8; ++b) {
    ASSERT_TRUE(store_->PutBlock({s, 0, b}, std::string(4096, static_cast<char>('a' + b))).ok());
  }
  ASSERT_TRUE(store_->GetBlock({s, 0, 7}).ok());
  EXPECT_EQ(fs_->file_syncs(), syncs);

  DropUnsyncedFs::DropStats dropped = Crash();
  EXPECT_GE(dropped.bytes_dropped, 8u * 4096);  // the crash really threw data away

  Open(/*sync=*/true);
  EXPECT_THAT(
      *store_->ReadTokenLog(s),
      ElementsAre(TokenRecord{0, {0, 100}}, TokenRecord{1, {1, 100}}, TokenRecord{2, {2, 100}}));
  EXPECT_EQ(*store_->GetMeta(s), "meta");
  EXPECT_THAT(store_->GetBlock({s, 0, 7}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("block")));
  // The store keeps working after recovery, and survives a second crash.
  ASSERT_TRUE(store_->AppendTokens(s, 3, std::vector<int32_t>{3}).ok());
  Crash();
  Open(/*sync=*/true);
  EXPECT_EQ(store_->ReadTokenLog(s)->size(), 4u);
}

TEST_F(DurabilityTest, WithoutTheSyncAnAcknowledgedTurnIsLost) {
  SessionId s = SessionId::Random();
  Open(/*sync=*/true);
  ASSERT_TRUE(store_->AppendTokens(s, 0, std::vector<int32_t>{1, 2, 3}).ok());
  store_.reset();  // a clean close: the synced turn is in the WAL
  Open(/*sync=*/false);
  ASSERT_TRUE(store_->AppendTokens(s, 1, std::vector<int32_t>{4, 5}).ok());
  ASSERT_TRUE(store_->AppendTokens(s, 2, std::vector<int32_t>{6}).ok());
  EXPECT_EQ(store_->ReadTokenLog(s)->size(), 3u);  // acknowledged and readable before the crash

  Crash();
  Open(/*sync=*/true);
  absl::StatusOr<std::vector<TokenRecord>> log = store_->ReadTokenLog(s);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_THAT(*log, ElementsAre(TokenRecord{0, {1, 2, 3}}));  // turns 1 and 2 are gone
}

// A group commit: four sessions' turns and metadata in one write, one fsync for all of them, and
// all of them there after a power loss; without the sync none is.
TEST_F(DurabilityTest, AGroupCommitIsOneSyncAndSurvivesPowerLossWhole) {
  std::vector<SessionId> ids;
  std::vector<std::vector<int32_t>> tokens;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(SessionId::Random());
    tokens.push_back({i, 7, 8});
  }
  for (bool sync : {true, false}) {
    Open(sync);
    std::vector<ColdStore::TurnCommit> group;
    for (int i = 0; i < 4; ++i) {
      const uint32_t turn = sync ? 0 : 1;
      group.push_back({ids[i], turn, tokens[i], "meta " + std::to_string(turn)});
    }
    const int64_t syncs = fs_->file_syncs();
    for (const absl::Status& st : store_->CommitTurns(group)) EXPECT_TRUE(st.ok()) << st;
    EXPECT_EQ(fs_->file_syncs() - syncs, sync ? 1 : 0) << "syncs for one group of four turns";
    Crash();
    Open(/*sync=*/true);
    for (int i = 0; i < 4; ++i) {
      absl::StatusOr<std::vector<TokenRecord>> log = store_->ReadTokenLog(ids[i]);
      ASSERT_TRUE(log.ok()) << log.status();
      // The synced group is whole; the unsynced one (turn 1) is gone, records and metadata.
      EXPECT_THAT(*log, ElementsAre(TokenRecord{0, tokens[i]})) << "sync " << sync << " " << i;
      EXPECT_EQ(*store_->GetMeta(ids[i]), "meta 0");
    }
    store_.reset();
  }
}

TEST_F(DurabilityTest, UnsyncedNewStoreLosesEverything) {
  SessionId s = SessionId::Random();
  Open(/*sync=*/false);
  ASSERT_TRUE(store_->AppendTokens(s, 0, std::vector<int32_t>{1}).ok());
  Crash();
  Open(/*sync=*/true);
  EXPECT_THAT(*store_->ReadTokenLog(s), IsEmpty());
  EXPECT_THAT(*store_->ListSessions(), IsEmpty());
}

}  // namespace
}  // namespace rsd
