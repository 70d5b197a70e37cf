#include "storage/testing/drop_unsynced_fs.h"

#include <algorithm>
#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace rsd {
namespace {

using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Slice;

std::string Normalize(const std::string& path) {
  std::string p = std::filesystem::path(path).lexically_normal().string();
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

std::string ParentOf(const std::string& normalized) {
  std::string parent = std::filesystem::path(normalized).parent_path().string();
  return parent.empty() ? "." : parent;
}

// A writable file that reports its syncs and refuses writes after a simulated power loss.
class TrackedFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  TrackedFile(std::unique_ptr<rocksdb::FSWritableFile> target, DropUnsyncedFs* fs, std::string path,
              uint64_t size)
      : FSWritableFileOwnerWrapper(std::move(target)),
        fs_(fs),
        path_(std::move(path)),
        size_(size) {}

  IOStatus Append(const Slice& data, const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->CheckActive("append " + path_);
    if (s.ok()) s = target()->Append(data, o, dbg);
    if (s.ok()) size_ += data.size();
    return s;
  }
  IOStatus Append(const Slice& data, const IOOptions& o, const rocksdb::DataVerificationInfo& info,
                  IODebugContext* dbg) override {
    IOStatus s = fs_->CheckActive("append " + path_);
    if (s.ok()) s = target()->Append(data, o, info, dbg);
    if (s.ok()) size_ += data.size();
    return s;
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions& o,
                            IODebugContext* dbg) override {
    IOStatus s = fs_->CheckActive("append " + path_);
    if (s.ok()) s = target()->PositionedAppend(data, offset, o, dbg);
    if (s.ok()) size_ = std::max<uint64_t>(size_, offset + data.size());
    return s;
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions& o,
                            const rocksdb::DataVerificationInfo& info,
                            IODebugContext* dbg) override {
    IOStatus s = fs_->CheckActive("append " + path_);
    if (s.ok()) s = target()->PositionedAppend(data, offset, o, info, dbg);
    if (s.ok()) size_ = std::max<uint64_t>(size_, offset + data.size());
    return s;
  }
  IOStatus Truncate(uint64_t size, const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->CheckActive("truncate " + path_);
    if (s.ok()) s = target()->Truncate(size, o, dbg);
    if (s.ok()) size_ = size;
    return s;
  }
  IOStatus Flush(const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->CheckActive("flush " + path_);
    return s.ok() ? target()->Flush(o, dbg) : s;
  }
  IOStatus Sync(const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->CheckActive("sync " + path_);
    if (s.ok()) s = target()->Sync(o, dbg);
    if (s.ok()) fs_->OnSynced(path_, size_);
    return s;
  }
  IOStatus Fsync(const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->CheckActive("fsync " + path_);
    if (s.ok()) s = target()->Fsync(o, dbg);
    if (s.ok()) fs_->OnSynced(path_, size_);
    return s;
  }
  // Not durable in our model (sync_file_range does not flush metadata or the disk cache).
  IOStatus RangeSync(uint64_t offset, uint64_t n, const IOOptions& o,
                     IODebugContext* dbg) override {
    IOStatus s = fs_->CheckActive("range sync " + path_);
    return s.ok() ? target()->RangeSync(offset, n, o, dbg) : s;
  }
  // Always closes the descriptor, even after a power loss, so nothing leaks.
  IOStatus Close(const IOOptions& o, IODebugContext* dbg) override {
    return target()->Close(o, dbg);
  }
  // No preallocation: a preallocated file is trimmed back to its written size on close, which
  // would regrow a file DropUnsyncedData truncated.
  void SetPreallocationBlockSize(size_t) override {}
  void GetPreallocationStatus(size_t* block_size, size_t* last_allocated_block) override {
    *block_size = 0;
    *last_allocated_block = 0;
  }
  void PrepareWrite(size_t, size_t, const IOOptions&, IODebugContext*) override {}
  IOStatus Allocate(uint64_t, uint64_t, const IOOptions&, IODebugContext*) override {
    return IOStatus::OK();
  }

 private:
  DropUnsyncedFs* fs_;
  const std::string path_;
  uint64_t size_;  // bytes written so far (RocksDB writes each file from one thread at a time)
};

class TrackedDirectory : public rocksdb::FSDirectoryWrapper {
 public:
  TrackedDirectory(std::unique_ptr<rocksdb::FSDirectory> target, DropUnsyncedFs* fs,
                   std::string path)
      : FSDirectoryWrapper(std::move(target)), fs_(fs), path_(std::move(path)) {}

  IOStatus Fsync(const IOOptions& o, IODebugContext* dbg) override {
    IOStatus s = fs_->CheckActive("fsync dir " + path_);
    if (s.ok()) s = FSDirectoryWrapper::Fsync(o, dbg);
    if (s.ok()) fs_->OnDirSynced(path_);
    return s;
  }
  IOStatus FsyncWithDirOptions(const IOOptions& o, IODebugContext* dbg,
                               const rocksdb::DirFsyncOptions& dir_opts) override {
    IOStatus s = fs_->CheckActive("fsync dir " + path_);
    if (s.ok()) s = FSDirectoryWrapper::FsyncWithDirOptions(o, dbg, dir_opts);
    if (s.ok()) fs_->OnDirSynced(path_);
    return s;
  }

 private:
  DropUnsyncedFs* fs_;
  const std::string path_;
};

}  // namespace

DropUnsyncedFs::DropUnsyncedFs(std::shared_ptr<rocksdb::FileSystem> target)
    : FileSystemWrapper(std::move(target)) {}

IOStatus DropUnsyncedFs::CheckActive(const std::string& what) {
  absl::MutexLock lock(&mu_);
  if (active_ && ++mutations_ == fail_at_) {
    active_ = false;
    tripped_ = true;
  }
  if (active_) return IOStatus::OK();
  return IOStatus::IOError("simulated power loss", what);
}

int64_t DropUnsyncedFs::mutations() const {
  absl::MutexLock lock(&mu_);
  return mutations_;
}

void DropUnsyncedFs::FailFrom(int64_t n) {
  absl::MutexLock lock(&mu_);
  fail_at_ = n > 0 ? mutations_ + n : 0;
  tripped_ = false;
}

bool DropUnsyncedFs::tripped() const {
  absl::MutexLock lock(&mu_);
  return tripped_;
}

bool DropUnsyncedFs::active() const {
  absl::MutexLock lock(&mu_);
  return active_;
}

int64_t DropUnsyncedFs::file_syncs() const {
  absl::MutexLock lock(&mu_);
  return file_syncs_;
}

void DropUnsyncedFs::OnSynced(const std::string& path, uint64_t size) {
  absl::MutexLock lock(&mu_);
  ++file_syncs_;
  auto it = files_.find(path);
  if (it != files_.end()) it->second.synced_size = size;
}

void DropUnsyncedFs::OnDirSynced(const std::string& dir) {
  absl::MutexLock lock(&mu_);
  for (auto& [path, state] : files_) {
    if (ParentOf(path) == dir) state.name_durable = true;
  }
}

IOStatus DropUnsyncedFs::WrapNew(const std::string& path, bool existed, uint64_t size,
                                 std::unique_ptr<rocksdb::FSWritableFile>* r) {
  {
    absl::MutexLock lock(&mu_);
    auto [it, inserted] = files_.try_emplace(path);
    if (inserted) {
      // A file seen for the first time: new (nothing durable), or pre-existing (all durable).
      it->second = FileState{existed ? size : 0, existed};
    }
  }
  *r = std::make_unique<TrackedFile>(std::move(*r), this, path, size);
  return IOStatus::OK();
}

IOStatus DropUnsyncedFs::NewWritableFile(const std::string& f, const rocksdb::FileOptions& opts,
                                         std::unique_ptr<rocksdb::FSWritableFile>* r,
                                         IODebugContext* dbg) {
  const std::string path = Normalize(f);
  IOStatus s = CheckActive("create " + path);
  if (!s.ok()) return s;
  const bool existed = target()->FileExists(path, IOOptions(), dbg).ok();
  s = target()->NewWritableFile(f, opts, r, dbg);
  if (!s.ok()) return s;
  {
    // Creating truncates: whatever was durable of the old contents is gone.
    absl::MutexLock lock(&mu_);
    files_[path] = FileState{0, existed};
  }
  return WrapNew(path, existed, 0, r);
}

IOStatus DropUnsyncedFs::ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& opts,
                                            std::unique_ptr<rocksdb::FSWritableFile>* r,
                                            IODebugContext* dbg) {
  const std::string path = Normalize(f);
  IOStatus s = CheckActive("reopen " + path);
  if (!s.ok()) return s;
  uint64_t size = 0;
  const bool existed = target()->GetFileSize(path, IOOptions(), &size, dbg).ok();
  s = target()->ReopenWritableFile(f, opts, r, dbg);
  if (!s.ok()) return s;
  return WrapNew(path, existed, size, r);
}

IOStatus DropUnsyncedFs::ReuseWritableFile(const std::string& f, const std::string& old_f,
                                           const rocksdb::FileOptions& opts,
                                           std::unique_ptr<rocksdb::FSWritableFile>* r,
                                           IODebugContext* dbg) {
  const std::string path = Normalize(f);
  IOStatus s = CheckActive("reuse " + path);
  if (!s.ok()) return s;
  s = target()->ReuseWritableFile(f, old_f, opts, r, dbg);
  if (!s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    files_.erase(Normalize(old_f));
    files_[path] = FileState{0, false};  // a rename plus a rewrite
  }
  return WrapNew(path, false, 0, r);
}

IOStatus DropUnsyncedFs::NewRandomRWFile(const std::string& f, const rocksdb::FileOptions& opts,
                                         std::unique_ptr<rocksdb::FSRandomRWFile>* r,
                                         IODebugContext* dbg) {
  IOStatus s = CheckActive("open rw " + f);
  return s.ok() ? target()->NewRandomRWFile(f, opts, r, dbg) : s;
}

IOStatus DropUnsyncedFs::NewDirectory(const std::string& name, const IOOptions& io_opts,
                                      std::unique_ptr<rocksdb::FSDirectory>* r,
                                      IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSDirectory> dir;
  IOStatus s = target()->NewDirectory(name, io_opts, &dir, dbg);
  if (!s.ok()) return s;
  *r = std::make_unique<TrackedDirectory>(std::move(dir), this, Normalize(name));
  return IOStatus::OK();
}

IOStatus DropUnsyncedFs::DeleteFile(const std::string& f, const IOOptions& opts,
                                    IODebugContext* dbg) {
  const std::string path = Normalize(f);
  IOStatus s = CheckActive("delete " + path);
  if (s.ok()) s = target()->DeleteFile(f, opts, dbg);
  if (s.ok()) {
    absl::MutexLock lock(&mu_);
    files_.erase(path);
  }
  return s;
}

IOStatus DropUnsyncedFs::RenameFile(const std::string& src, const std::string& dst,
                                    const IOOptions& opts, IODebugContext* dbg) {
  const std::string from = Normalize(src), to = Normalize(dst);
  IOStatus s = CheckActive("rename " + from);
  if (!s.ok()) return s;
  uint64_t size = 0;
  const bool src_exists = target()->GetFileSize(from, IOOptions(), &size, dbg).ok();
  s = target()->RenameFile(src, dst, opts, dbg);
  if (!s.ok()) return s;
  absl::MutexLock lock(&mu_);
  FileState state{src_exists ? size : 0, false};  // the new name needs a directory fsync
  if (auto it = files_.find(from); it != files_.end()) {
    state.synced_size = it->second.synced_size;
    files_.erase(it);
  }
  files_[to] = state;
  return IOStatus::OK();
}

IOStatus DropUnsyncedFs::LinkFile(const std::string& src, const std::string& dst,
                                  const IOOptions& opts, IODebugContext* dbg) {
  IOStatus s = CheckActive("link " + src);
  return s.ok() ? target()->LinkFile(src, dst, opts, dbg) : s;
}

IOStatus DropUnsyncedFs::Truncate(const std::string& f, size_t size, const IOOptions& opts,
                                  IODebugContext* dbg) {
  IOStatus s = CheckActive("truncate " + f);
  return s.ok() ? target()->Truncate(f, size, opts, dbg) : s;
}

IOStatus DropUnsyncedFs::CreateDir(const std::string& d, const IOOptions& opts,
                                   IODebugContext* dbg) {
  IOStatus s = CheckActive("create dir " + d);
  return s.ok() ? target()->CreateDir(d, opts, dbg) : s;
}

IOStatus DropUnsyncedFs::CreateDirIfMissing(const std::string& d, const IOOptions& opts,
                                            IODebugContext* dbg) {
  IOStatus s = CheckActive("create dir " + d);
  return s.ok() ? target()->CreateDirIfMissing(d, opts, dbg) : s;
}

IOStatus DropUnsyncedFs::DeleteDir(const std::string& d, const IOOptions& opts,
                                   IODebugContext* dbg) {
  IOStatus s = CheckActive("delete dir " + d);
  return s.ok() ? target()->DeleteDir(d, opts, dbg) : s;
}

absl::StatusOr<DropUnsyncedFs::DropStats> DropUnsyncedFs::DropUnsyncedData() {
  std::map<std::string, FileState> files;
  {
    absl::MutexLock lock(&mu_);
    active_ = false;
    files.swap(files_);
  }
  DropStats stats;
  for (const auto& [path, state] : files) {
    IOStatus s;
    if (!state.name_durable) {
      s = target()->DeleteFile(path, IOOptions(), nullptr);
      if (s.ok()) ++stats.files_deleted;
      if (s.IsNotFound() || s.IsPathNotFound()) s = IOStatus::OK();
    } else {
      uint64_t size = 0;
      s = target()->GetFileSize(path, IOOptions(), &size, nullptr);
      // Deleted since (an obsolete table file after a compaction, which RocksDB deletes only once
      // the manifest that drops it is synced): the deletion stands.
      if (s.IsNotFound() || s.IsPathNotFound()) s = IOStatus::OK();
      if (s.ok() && size > state.synced_size) {
        std::unique_ptr<rocksdb::FSWritableFile> file;
        s = target()->ReopenWritableFile(path, rocksdb::FileOptions(), &file, nullptr);
        if (s.ok()) s = file->Truncate(state.synced_size, IOOptions(), nullptr);
        if (s.ok()) s = file->Close(IOOptions(), nullptr);
        if (s.ok()) {
          ++stats.files_truncated;
          stats.bytes_dropped += size - state.synced_size;
        }
      }
    }
    if (!s.ok()) {
      return absl::InternalError(absl::StrCat("DropUnsyncedData: ", path, ": ", s.ToString()));
    }
  }
  return stats;
}

void DropUnsyncedFs::Reactivate() {
  absl::MutexLock lock(&mu_);
  active_ = true;
  files_.clear();
  mutations_ = 0;
  fail_at_ = 0;
  tripped_ = false;
}

}  // namespace rsd
