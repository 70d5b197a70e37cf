#include "storage/rocks_db.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "storage/common/status.h"
#include "storage/rocksdb_status.h"

namespace rsd {
namespace {

absl::Status ErrnoStatus(int err, const std::string& what) {
  std::string msg = absl::StrCat(what, ": ", std::strerror(err));
  if (err == EACCES || err == EPERM || err == EROFS) return absl::PermissionDeniedError(msg);
  if (err == ENOENT || err == ENOTDIR) return absl::FailedPreconditionError(msg);
  return absl::InternalError(msg);
}

// 0: missing; 1: directory; 2: something else; <0: -errno.
int PathKind(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return errno == ENOENT ? 0 : -errno;
  return S_ISDIR(st.st_mode) ? 1 : 2;
}

absl::Status CheckAccess(const std::string& dir, const std::string& what) {
  if (access(dir.c_str(), R_OK | W_OK | X_OK) != 0) {
    return ErrnoStatus(errno,
                       absl::StrCat(what, " data dir ", dir, " is not readable and writable"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status PrepareDataDir(const std::string& dir_in, const std::string& what) {
  if (dir_in.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " data dir is empty"));
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const int kind = PathKind(dir);
  if (kind < 0) return ErrnoStatus(-kind, absl::StrCat(what, " data dir ", dir));
  if (kind == 1) return CheckAccess(dir, what);
  if (kind == 2) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " data dir ", dir, " exists and is not a directory"));
  }
  const std::filesystem::path parent_path = std::filesystem::path(dir).parent_path();
  const std::string parent = parent_path.empty() ? std::string(".") : parent_path.string();
  const int parent_kind = PathKind(parent);
  if (parent_kind < 0) {
    return ErrnoStatus(-parent_kind,
                       absl::StrCat("parent ", parent, " of ", what, " data dir ", dir));
  }
  if (parent_kind == 0) {  // missing parents are created, as `mkdir -p` would
    std::error_code ec;
    std::filesystem::create_directories(parent_path, ec);
    if (ec) {
      return absl::FailedPreconditionError(absl::StrCat("cannot create ", what, " data dir ", dir,
                                                        ": parent ", parent, ": ", ec.message()));
    }
  } else if (parent_kind != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " data dir ", dir, ": parent ", parent, " is not a directory"));
  }
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoStatus(errno, absl::StrCat("cannot create ", what, " data dir ", dir));
  }
  return CheckAccess(dir, what);
}

absl::StatusOr<std::unique_ptr<RocksDb>> RocksDb::Open(const std::string& dir, Options o) {
  RSD_RETURN_IF_ERROR(PrepareDataDir(dir, o.what));
  std::unique_ptr<RocksDb> r(new RocksDb());
  r->dir_ = dir;
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  // The WAL is the durability mechanism; a crash never flushes either, so close behaves the same.
  db_options.avoid_flush_during_shutdown = true;
  db_options.keep_log_file_num = 4;
  if (o.db_write_buffer_size > 0) db_options.db_write_buffer_size = o.db_write_buffer_size;
  if (o.file_system != nullptr) {
    r->env_ = rocksdb::NewCompositeEnv(o.file_system);
    db_options.env = r->env_.get();
  }
  // Every family already there (a newer build may have added some) plus ours.
  std::map<std::string, rocksdb::ColumnFamilyOptions> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()}};
  for (const Family& f : o.families) families[f.name] = f.options;
  std::vector<std::string> existing;
  if (rocksdb::DB::ListColumnFamilies(db_options, dir, &existing).ok()) {
    for (const std::string& name : existing) families.emplace(name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const auto& [name, options] : families) descriptors.emplace_back(name, options);
  rocksdb::DB* db = nullptr;
  const rocksdb::Status s = rocksdb::DB::Open(db_options, dir, descriptors, &r->handles_, &db);
  if (!s.ok()) {
    if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
      return absl::FailedPreconditionError(absl::StrCat(
          o.what, " ", dir, " is already open (in this or another process): ", s.ToString()));
    }
    return FromRocksDb(s, absl::StrCat("open ", o.what, " ", dir));
  }
  r->db_.reset(db);
  return r;
}

RocksDb::~RocksDb() {
  if (db_ != nullptr) {
    for (rocksdb::ColumnFamilyHandle* h : handles_) {
      db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    }
    db_->Close().PermitUncheckedError();
    db_.reset();
  }
  env_.reset();
}

rocksdb::ColumnFamilyHandle* RocksDb::family(std::string_view name) const {
  for (rocksdb::ColumnFamilyHandle* h : handles_) {
    if (h->GetName() == name) return h;
  }
  RSD_CHECK(false && "column family not opened");
  return nullptr;
}

}  // namespace rsd
