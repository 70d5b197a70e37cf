// The fault-injecting file system itself: what survives DropUnsyncedData.
#include "storage/testing/drop_unsynced_fs.h"

#include <filesystem>

#include "gtest/gtest.h"
#include "tests/support/test_util.h"

namespace rsd {
namespace {

using rocksdb::FileOptions;
using rocksdb::IOOptions;

class DropUnsyncedFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = rsd::testing::MakeTempDir("drop_unsynced_fs_test");
    fs_ = std::make_shared<DropUnsyncedFs>();
    ASSERT_TRUE(fs_->NewDirectory(dir_, IOOptions(), &dir_handle_, nullptr).ok());
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::unique_ptr<rocksdb::FSWritableFile> Create(const std::string& name) {
    std::unique_ptr<rocksdb::FSWritableFile> f;
    EXPECT_TRUE(fs_->NewWritableFile(dir_ + "/" + name, FileOptions(), &f, nullptr).ok());
    return f;
  }
  void Append(rocksdb::FSWritableFile* f, const std::string& data) {
    ASSERT_TRUE(f->Append(data, IOOptions(), nullptr).ok());
  }
  uint64_t Size(const std::string& name) {
    std::error_code ec;
    uint64_t n = std::filesystem::file_size(dir_ + "/" + name, ec);
    return ec ? UINT64_MAX : n;
  }

  std::string dir_;
  std::shared_ptr<DropUnsyncedFs> fs_;
  std::unique_ptr<rocksdb::FSDirectory> dir_handle_;
};

TEST_F(DropUnsyncedFsTest, KeepsSyncedPrefixOfDurableFiles) {
  auto f = Create("a");
  Append(f.get(), "synced-");
  ASSERT_TRUE(f->Sync(IOOptions(), nullptr).ok());
  ASSERT_TRUE(dir_handle_->Fsync(IOOptions(), nullptr).ok());
  Append(f.get(), "lost");
  ASSERT_TRUE(f->Flush(IOOptions(), nullptr).ok());
  EXPECT_EQ(Size("a"), 11u);
  EXPECT_EQ(fs_->file_syncs(), 1);

  absl::StatusOr<DropUnsyncedFs::DropStats> stats = fs_->DropUnsyncedData();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->files_truncated, 1);
  EXPECT_EQ(stats->bytes_dropped, 4u);
  EXPECT_EQ(Size("a"), 7u);
  // Dead until reactivated: writes fail and never reach the disk; close still releases the file.
  EXPECT_TRUE(f->Append("more", IOOptions(), nullptr).IsIOError());
  EXPECT_TRUE(f->Sync(IOOptions(), nullptr).IsIOError());
  EXPECT_TRUE(f->Close(IOOptions(), nullptr).ok());
  EXPECT_EQ(Size("a"), 7u);
  EXPECT_FALSE(fs_->active());
  fs_->Reactivate();
  EXPECT_TRUE(fs_->active());
}

TEST_F(DropUnsyncedFsTest, FilesWhoseNameWasNeverDurableVanish) {
  auto synced_no_dir = Create("b");
  Append(synced_no_dir.get(), "data");
  ASSERT_TRUE(synced_no_dir->Fsync(IOOptions(), nullptr).ok());
  auto never_synced = Create("c");
  Append(never_synced.get(), "data");
  ASSERT_TRUE(synced_no_dir->Close(IOOptions(), nullptr).ok());
  ASSERT_TRUE(never_synced->Close(IOOptions(), nullptr).ok());

  absl::StatusOr<DropUnsyncedFs::DropStats> stats = fs_->DropUnsyncedData();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->files_deleted, 2);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/b"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/c"));
}

TEST_F(DropUnsyncedFsTest, RenameNeedsADirectoryFsync) {
  auto f = Create("tmp");
  Append(f.get(), "payload");
  ASSERT_TRUE(f->Sync(IOOptions(), nullptr).ok());
  ASSERT_TRUE(f->Close(IOOptions(), nullptr).ok());
  ASSERT_TRUE(dir_handle_->Fsync(IOOptions(), nullptr).ok());
  ASSERT_TRUE(fs_->RenameFile(dir_ + "/tmp", dir_ + "/kept", IOOptions(), nullptr).ok());
  ASSERT_TRUE(dir_handle_->Fsync(IOOptions(), nullptr).ok());
  auto g = Create("tmp2");
  Append(g.get(), "x");
  ASSERT_TRUE(g->Sync(IOOptions(), nullptr).ok());
  ASSERT_TRUE(g->Close(IOOptions(), nullptr).ok());
  ASSERT_TRUE(dir_handle_->Fsync(IOOptions(), nullptr).ok());
  ASSERT_TRUE(fs_->RenameFile(dir_ + "/tmp2", dir_ + "/lost", IOOptions(), nullptr).ok());

  ASSERT_TRUE(fs_->DropUnsyncedData().ok());
  EXPECT_EQ(Size("kept"), 7u);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/lost"));
}

TEST_F(DropUnsyncedFsTest, PreexistingFilesAreDurable) {
  {
    auto f = Create("old");
    Append(f.get(), "old contents");
    ASSERT_TRUE(f->Sync(IOOptions(), nullptr).ok());
    ASSERT_TRUE(f->Close(IOOptions(), nullptr).ok());
    ASSERT_TRUE(dir_handle_->Fsync(IOOptions(), nullptr).ok());
  }
  auto fresh = std::make_shared<DropUnsyncedFs>();
  std::unique_ptr<rocksdb::FSWritableFile> f;
  ASSERT_TRUE(fresh->ReopenWritableFile(dir_ + "/old", FileOptions(), &f, nullptr).ok());
  Append(f.get(), " + unsynced");
  ASSERT_TRUE(f->Close(IOOptions(), nullptr).ok());
  ASSERT_TRUE(fresh->DropUnsyncedData().ok());
  EXPECT_EQ(Size("old"), 12u);
}

TEST_F(DropUnsyncedFsTest, FailFromCutsThePowerBeforeTheNthMutation) {
  auto f = Create("a");  // mutation 1
  EXPECT_EQ(fs_->mutations(), 1);
  fs_->FailFrom(5);                                            // the 5th mutation from now
  Append(f.get(), "one-");                                     // 1st from now
  ASSERT_TRUE(f->Sync(IOOptions(), nullptr).ok());             // 2nd
  ASSERT_TRUE(dir_handle_->Fsync(IOOptions(), nullptr).ok());  // 3rd
  Append(f.get(), "two");  // 4th: the last that reaches the disk
  EXPECT_FALSE(fs_->tripped());
  EXPECT_FALSE(f->Append("three", IOOptions(), nullptr).ok());  // 5th: the power fails here
  EXPECT_TRUE(fs_->tripped());
  EXPECT_FALSE(fs_->active());
  EXPECT_FALSE(f->Sync(IOOptions(), nullptr).ok());
  EXPECT_EQ(Size("a"), 7u);  // reads still see what was written before the power failed
  absl::StatusOr<DropUnsyncedFs::DropStats> stats = fs_->DropUnsyncedData();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(Size("a"), 4u);  // only the synced part survives
  ASSERT_TRUE(f->Close(IOOptions(), nullptr).ok());
  fs_->Reactivate();
  EXPECT_EQ(fs_->mutations(), 0);
  EXPECT_FALSE(fs_->tripped());
  auto g = Create("b");
  Append(g.get(), "after the restart, nothing is armed");
}

}  // namespace
}  // namespace rsd
