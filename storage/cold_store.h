// The cold tier: RocksDB on local disk. Holds, per session, opaque metadata, the token log (the
// session's ground truth, DESIGN.md section 5) and encoded checkpoint blocks (state_codec.h).
//
// Column families and keys (big-endian, so a session's data is one contiguous key range):
//   meta    session(16)                         → opaque bytes the engine writes (e.g. JSON)
//   tokens  session(16) | turn(4)               → token-log record: u32 n | n x i32 ids | u64
//                                                  XXH3-64 of (key | preceding bytes), all LE
//   blocks  session(16) | layer(4) | block(4)   → encoded checkpoint block (BlockKey::Encode)
// RocksDB's own compression is off for `blocks` (the codec compresses when asked).
//
// Durability: AppendTokens, TruncateTokenLog, PutMeta and DeleteSession return after the WAL is
// fsynced (an acknowledged turn survives a crash or power loss). PutBlock/DeleteBlock are written
// to the WAL without fsync: a crash may lose the latest blocks, which the engine rebuilds from a
// smaller form or the token log. Memtables are not flushed on close; the WAL replays on open.
//
// Thread-safe: every method may be called concurrently (RocksDB's own locking; token-log appends
// and truncations are serialized by an internal mutex). Every method blocks on disk I/O.
// Errors: NOT_FOUND for an absent key; DATA_LOSS for a corrupt token record or RocksDB
// corruption; INTERNAL / RESOURCE_EXHAUSTED (disk full) for other I/O errors, naming the key.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "storage/block_key.h"
#include "storage/common/ids.h"
#include "storage/rocks_db.h"  // also declares the rocksdb types used here

namespace rsd {

struct ColdStoreOptions {
  // The file system RocksDB writes through; null means the local one. Tests pass a
  // fault-injecting wrapper (storage/testing/drop_unsynced_fs.h). The store holds a reference
  // while open.
  std::shared_ptr<rocksdb::FileSystem> file_system;
  // Tests only: false skips the fsync on writes that are normally synced, to show that the
  // durability test fails without it. Never false in production.
  bool sync = true;
};

// One committed turn of the token log.
struct TokenRecord {
  uint32_t turn = 0;
  std::vector<int32_t> tokens;
  friend bool operator==(const TokenRecord&, const TokenRecord&) = default;
};

class ColdStore {
 public:
  enum class Table { kMeta, kTokens, kBlocks };

  // Opens (creating if needed) the store in `dir`. A missing `dir` is created only if its parent
  // directory exists. FAILED_PRECONDITION naming the path if the parent is missing, `dir` is not
  // a directory, or the store is already open (RocksDB's lock); PERMISSION_DENIED naming the path
  // if it cannot be read, written or created; DATA_LOSS if RocksDB finds corruption.
  static absl::StatusOr<std::unique_ptr<ColdStore>> Open(const std::string& dir,
                                                         ColdStoreOptions options = {});
  // Closes the database without flushing memtables (see Durability above).
  ~ColdStore();
  ColdStore(const ColdStore&) = delete;
  ColdStore& operator=(const ColdStore&) = delete;

  // Checkpoint blocks: stored and returned as raw bytes; the caller encodes and decodes them
  // (DecodeBlock reports corruption as DATA_LOSS). GetBlock: NOT_FOUND naming the key if absent.
  // DeleteBlock of an absent key is OK.
  absl::Status PutBlock(const BlockKey& key, std::string_view value);
  absl::StatusOr<std::string> GetBlock(const BlockKey& key);
  absl::Status DeleteBlock(const BlockKey& key);
  // Calls `fn(key, value)` for each stored block of `session` in key order (layer, then block);
  // `value` is valid only during the call. Stops at and returns the first non-OK status of `fn`.
  absl::Status ForEachBlock(
      const SessionId& session,
      absl::FunctionRef<absl::Status(const BlockKey& key, std::string_view value)> fn);

  // Session metadata (synced). GetMeta: NOT_FOUND if the session has none.
  absl::Status PutMeta(const SessionId& session, std::string_view value);
  absl::StatusOr<std::string> GetMeta(const SessionId& session);

  // Appends turn `turn` (0-based) to the session's token log, synced before returning.
  // `turn` must equal TokenLogTurns(session); re-appending an existing turn with the same tokens
  // is OK (an idempotent retry); ALREADY_EXISTS if its stored tokens differ; FAILED_PRECONDITION
  // if `turn` would leave a gap.
  absl::Status AppendTokens(const SessionId& session, uint32_t turn,
                            std::span<const int32_t> tokens);
  // Writes a whole token log at once (an imported session): turn t holds tokens
  // [turn_ends[t-1], turn_ends[t]). One batch, synced once. FAILED_PRECONDITION if the session
  // already has a log; INVALID_ARGUMENT unless turn_ends ascend strictly to tokens.size().
  absl::Status PutTokenLog(const SessionId& session, std::span<const int32_t> tokens,
                           std::span<const int64_t> turn_ends);
  // The log by point lookups of turn 0, 1, ... until one is absent: unlike ReadTokenLog's range
  // scan, it reads no table file that holds only other sessions' keys (salvage after damage).
  // DATA_LOSS naming the session and turn for a record that fails its checksum.
  absl::StatusOr<std::vector<TokenRecord>> ReadTokenLogByKeys(const SessionId& session);
  // Every record of the log, turn 0 first; empty for a session with no log. DATA_LOSS naming the
  // session and turn if a record fails its checksum, is malformed, or a turn is missing.
  absl::StatusOr<std::vector<TokenRecord>> ReadTokenLog(const SessionId& session);
  // Number of turns in the log (last turn + 1); 0 if none. Reads only the last key.
  absl::StatusOr<uint32_t> TokenLogTurns(const SessionId& session);
  // Keeps turns [0, keep_turns) and removes the rest (undo / rollback), synced. Keeping more
  // turns than exist is OK.
  absl::Status TruncateTokenLog(const SessionId& session, uint32_t keep_turns);

  // Removes the session from every column family (range deletes), synced; with `keep_blocks`, from
  // the metadata and token log only (its checkpoint blocks stay for their owner to delete).
  absl::Status DeleteSession(const SessionId& session, bool keep_blocks = false);
  // Every session with metadata, a token log or blocks, in id order.
  // A family that cannot be read to its end (a damaged block) leaves the sessions the other
  // families name, and sets `*complete` false (if given); only when none can be read is it an
  // error.
  absl::StatusOr<std::vector<SessionId>> ListSessions(bool* complete = nullptr);

  // Flushes memtables to table files (tests: exercise reads from SSTs, not only the WAL replay).
  absl::Status Flush();

  // Tests only: write / read raw bytes under a raw key, bypassing every check (to corrupt a stored
  // block or token record). Keys as above: BlockKey::Encode(), TokenLogKey(), MetaKey().
  absl::Status RawPutForTest(Table table, std::string_view key, std::string_view value);
  absl::StatusOr<std::string> RawGetForTest(Table table, std::string_view key);
  static std::string MetaKey(const SessionId& session);
  static std::string TokenLogKey(const SessionId& session, uint32_t turn);

  const std::string& dir() const { return dir_; }

 private:
  ColdStore() = default;
  rocksdb::ColumnFamilyHandle* Handle(Table table) const;
  absl::Status Write(Table table, std::string_view key, std::string_view value, bool sync);
  absl::StatusOr<std::string> Read(Table table, std::string_view key, const std::string& what);
  absl::StatusOr<uint32_t> TokenLogTurnsImpl(const SessionId& session);

  std::string dir_;
  bool sync_ = true;
  std::unique_ptr<RocksDb> rocks_;
  rocksdb::DB* db_ = nullptr;  // rocks_'s
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  rocksdb::ColumnFamilyHandle* tokens_ = nullptr;
  rocksdb::ColumnFamilyHandle* blocks_ = nullptr;
  absl::Mutex token_mu_;  // serializes token-log read-modify-write sequences
};

}  // namespace rsd
