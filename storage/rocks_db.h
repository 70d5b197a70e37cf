// One RocksDB database with named column families, opened the way every store of ours opens one:
// the data dir checked (only its last component created), missing families created, families a
// newer build added opened too, and the WAL as the durability mechanism (memtables are not flushed
// on close; a crash and a clean close recover the same way). Shared by the cold tier's ColdStore
// and the router's Journal; errors name the store (`what`) and the path.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "rocksdb/options.h"

namespace rocksdb {
class ColumnFamilyHandle;
class DB;
class Env;
class FileSystem;
class WriteBatch;
}  // namespace rocksdb

namespace rsd {

// Makes sure `dir` is a readable, writable directory, creating it (0755) if only it is missing.
// FAILED_PRECONDITION naming the path if its parent is missing or it is not a directory;
// PERMISSION_DENIED naming the path if it cannot be read, written or created. `what` names the
// store in messages ("cold store", "router").
absl::Status PrepareDataDir(const std::string& dir, const std::string& what);

class RocksDb {
 public:
  struct Family {
    std::string name;
    rocksdb::ColumnFamilyOptions options;
  };
  struct Options {
    std::string what;                 // "cold store", "router journal": named in every error
    std::vector<Family> families;     // created if missing
    size_t db_write_buffer_size = 0;  // all memtables together (0: RocksDB's default)
    // The file system to write through (null: the local one); tests inject faults with it.
    std::shared_ptr<rocksdb::FileSystem> file_system;
  };

  // PrepareDataDir, then opens. FAILED_PRECONDITION if the database is already open (its lock);
  // DATA_LOSS on corruption; other RocksDB errors as FromRocksDb maps them.
  static absl::StatusOr<std::unique_ptr<RocksDb>> Open(const std::string& dir, Options options);
  ~RocksDb();
  RocksDb(const RocksDb&) = delete;
  RocksDb& operator=(const RocksDb&) = delete;

  rocksdb::DB* db() const { return db_.get(); }
  // A family given at Open (RSD_CHECK otherwise).
  rocksdb::ColumnFamilyHandle* family(std::string_view name) const;
  const std::string& dir() const { return dir_; }

 private:
  RocksDb() = default;
  std::string dir_;
  std::unique_ptr<rocksdb::Env> env_;  // only with a custom file system; outlives db_
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // owned; destroyed before db_ closes
};

}  // namespace rsd
