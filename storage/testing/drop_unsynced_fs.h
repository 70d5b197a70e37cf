// A fault-injecting rocksdb::FileSystem for durability tests: it remembers, per file written
// through it, how many bytes were last made durable (Sync/Fsync) and whether its name was made
// durable (an fsync of its directory after it was created or renamed), and on DropUnsyncedData()
// throws away everything else, as a power loss would.
//
// Model: a file created or renamed through this FS is lost entirely unless its directory was
// fsynced afterwards; otherwise it keeps exactly the bytes up to its last Sync/Fsync. Close does
// not sync. Files this FS never saw being written (pre-existing files, RocksDB's info LOG, which
// is opened through NewLogger) are treated as durable. Deletions are durable at once.
// Preallocation is disabled on wrapped files so closing a truncated file cannot regrow it.
//
// Thread-safe (RocksDB calls it from its background threads). Test-only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/file_system.h"

namespace rsd {

class DropUnsyncedFs : public rocksdb::FileSystemWrapper {
 public:
  struct DropStats {
    int files_truncated = 0;
    int files_deleted = 0;
    uint64_t bytes_dropped = 0;  // from truncations (deleted files not counted)
  };

  explicit DropUnsyncedFs(
      std::shared_ptr<rocksdb::FileSystem> target = rocksdb::FileSystem::Default());

  // Simulates a power loss now: from this call until Reactivate(), every write, sync, create,
  // rename and delete through this FS (and through files it opened) fails with an IOError, so
  // the process "dies" without reaching the disk again; then truncates each tracked file to its
  // durable size and deletes each file whose name was never durable. Destroy the database object
  // after this call (its shutdown writes fail harmlessly), then Reactivate() and reopen.
  // INTERNAL if the underlying file system cannot truncate or delete a file.
  absl::StatusOr<DropStats> DropUnsyncedData();
  // Lets writes through again (the "machine" restarted). Tracking starts afresh.
  void Reactivate();
  bool active() const;

  // Number of successful Sync/Fsync calls on files (tests check that syncs really happened).
  int64_t file_syncs() const;

  // Crash points. Every call that would change the disk (append, sync, truncate, create, rename,
  // delete, a directory fsync) is one mutation; mutations() counts them since construction or the
  // last Reactivate(). FailFrom(n) makes the power fail just before the n-th mutation from now
  // (1-based): it and every later one fail as after DropUnsyncedData (nothing more reaches the
  // disk), while reads still see what was written; the test then calls DropUnsyncedData() to
  // throw the unsynced part away, as the power loss would have. 0 disarms. tripped() tells
  // whether the armed point was reached.
  int64_t mutations() const;
  void FailFrom(int64_t n);
  bool tripped() const;

  // rocksdb::FileSystem
  static const char* kClassName() { return "DropUnsyncedFs"; }
  const char* Name() const override { return kClassName(); }
  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& opts,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& opts,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& f, const std::string& old_f,
                                      const rocksdb::FileOptions& opts,
                                      std::unique_ptr<rocksdb::FSWritableFile>* r,
                                      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewRandomRWFile(const std::string& f, const rocksdb::FileOptions& opts,
                                    std::unique_ptr<rocksdb::FSRandomRWFile>* r,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& io_opts,
                                 std::unique_ptr<rocksdb::FSDirectory>* r,
                                 rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& f, const rocksdb::IOOptions& opts,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& dst,
                               const rocksdb::IOOptions& opts,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus LinkFile(const std::string& src, const std::string& dst,
                             const rocksdb::IOOptions& opts, rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Truncate(const std::string& f, size_t size, const rocksdb::IOOptions& opts,
                             rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus CreateDir(const std::string& d, const rocksdb::IOOptions& opts,
                              rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus CreateDirIfMissing(const std::string& d, const rocksdb::IOOptions& opts,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteDir(const std::string& d, const rocksdb::IOOptions& opts,
                              rocksdb::IODebugContext* dbg) override;

  // Called by the wrapped files and directories.
  // Counts a mutation and fails it if the power is off (or goes off now: FailFrom).
  rocksdb::IOStatus CheckActive(const std::string& what);
  void OnSynced(const std::string& path, uint64_t size);
  void OnDirSynced(const std::string& dir);

 private:
  struct FileState {
    uint64_t synced_size = 0;
    bool name_durable = false;
  };
  rocksdb::IOStatus WrapNew(const std::string& path, bool existed, uint64_t size,
                            std::unique_ptr<rocksdb::FSWritableFile>* r);

  mutable absl::Mutex mu_;
  bool active_ ABSL_GUARDED_BY(mu_) = true;
  int64_t file_syncs_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t mutations_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t fail_at_ ABSL_GUARDED_BY(mu_) = 0;  // the mutation count at which power fails (0: never)
  bool tripped_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, FileState> files_ ABSL_GUARDED_BY(mu_);  // normalized path → state
};

}  // namespace rsd
