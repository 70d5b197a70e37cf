// The cold tier: RocksDB on local disk. Holds, per session, opaque metadata, the token log (the
// session's ground truth, DESIGN.md section 5) and encoded checkpoint blocks (state_codec.h).
//
// Column families and keys (big-endian, so a session's data is one contiguous key range):
//   meta    session(16)                         → opaque bytes the engine writes (e.g. JSON)
//   tokens  session(16) | turn(4)               → token-log record: u32 n | n x i32 ids | u64
//                                                  XXH3-64 of (key | preceding bytes), all LE
//   blocks  session(16) | layer(4) | block(4)   → "RSDC" | hash(16): a reference to the block's
//                                                  encoded bytes in `content` (BlockKey::Encode);
//                                                  or the bytes themselves (older stores, or two
//                                                  values with one hash)
//   content "v" | hash(16)                      → an encoded checkpoint block, stored once
//           "n" | hash(16)                      → u64 references | u64 value bytes, LE
// RocksDB's own compression is off for `content` (the codec compresses when asked).
//
// Deduplication (issue #15): a block's hash is the XXH3-128 of its bytes, so blocks with the same
// bytes (sessions that share a prefix hold bit-identical checkpoints of it) are stored once, with
// a count of the keys that refer to them. A write that finds the hash compares the bytes, so a
// collision costs only the sharing. A reference and its count change in one atomic write batch:
// after a crash both or neither are there. Open recounts every reference (the sweep), deleting
// values no key refers to and keys whose value is missing, and fixing counts.
//
// Durability: AppendTokens, CommitTurns, TruncateTokenLog, PutMeta and DeleteSession return after
// the WAL is fsynced (an acknowledged turn survives a crash or power loss). PutBlock/DeleteBlock
// are written to the WAL without fsync: a crash may lose the latest blocks, which the engine
// rebuilds from a smaller form or the token log. Memtables are not flushed on close; the WAL
// replays on open.
//
// Thread-safe: every method may be called concurrently (RocksDB's own locking; token-log appends
// and truncations are serialized by an internal mutex). Every method blocks on disk I/O.
// Errors: NOT_FOUND for an absent key; DATA_LOSS for a corrupt token record or RocksDB
// corruption; INTERNAL / RESOURCE_EXHAUSTED (disk full) for other I/O errors, naming the key.
#pragma once

#include <cstdint>
#include <map>
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
  enum class Table { kMeta, kTokens, kBlocks, kContent };

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
  // (DecodeBlock reports corruption as DATA_LOSS). GetBlock: NOT_FOUND naming the key if absent;
  // DATA_LOSS naming it if the bytes it refers to are missing. DeleteBlock of an absent key is OK.
  absl::Status PutBlock(const BlockKey& key, std::string_view value);
  absl::StatusOr<std::string> GetBlock(const BlockKey& key);
  absl::Status DeleteBlock(const BlockKey& key);
  // The keys of the session's stored blocks, in key order, without reading their values.
  absl::StatusOr<std::vector<BlockKey>> BlockKeys(const SessionId& session);
  // The bytes of the session's blocks (each counted in full, shared or not), from the reference
  // counts' records: no value is read.
  absl::StatusOr<int64_t> SessionBlockBytes(const SessionId& session);
  // `from`'s value also under `to`, by reference: no bytes are read or written. NOT_FOUND if
  // `from` is absent.
  absl::Status AliasBlock(const BlockKey& from, const BlockKey& to);
  // What the blocks occupy: distinct values and their bytes, and the keys that refer to them
  // (deduplication saves the bytes of references - values, roughly). Any thread.
  struct ContentStats {
    int64_t values = 0, bytes = 0, references = 0;
    int64_t referenced_bytes = 0;  // each reference's value bytes (what storing by key would take)
  };
  ContentStats content_stats() const;
  // What the sweep at Open fixed: values no key referred to, keys whose value was missing, and
  // counts that were wrong (0 after a clean run or a crash: writes are atomic).
  struct SweepReport {
    int64_t orphan_values = 0, dangling_keys = 0, fixed_counts = 0;
  };
  const SweepReport& swept_at_open() const { return swept_; }
  // Whether the sweep at Open could not read every block (a damaged table file: logged, and the
  // store opened anyway).
  bool sweep_failed() const { return sweep_failed_; }
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
  // One committed turn for CommitTurns: its tokens appended to the session's log as AppendTokens
  // does, and the session's metadata replaced by `meta`.
  struct TurnCommit {
    SessionId session;
    uint32_t turn = 0;
    std::span<const int32_t> tokens;
    std::string meta;
  };
  // A group commit: the turns of several sessions (those that end in the same engine step) and
  // their metadata in one write batch, synced once, so N turns cost one fsync instead of 2N.
  // After a crash all of them or none are there; each turn's record and metadata together.
  // One status per commit, in order: a commit AppendTokens would refuse (or a second one for the
  // same session: INVALID_ARGUMENT) fails alone and the rest are written; a failed write fails
  // every commit. An idempotent retry writes only its metadata.
  std::vector<absl::Status> CommitTurns(std::span<const TurnCommit> commits);
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

  // Tests only: write / read / delete raw bytes under a raw key, bypassing every check (to corrupt
  // a stored block or token record). Keys as above: BlockKey::Encode(), TokenLogKey(), MetaKey(),
  // "v" or "n" and a hash.
  absl::Status RawPutForTest(Table table, std::string_view key, std::string_view value);
  absl::StatusOr<std::string> RawGetForTest(Table table, std::string_view key);
  absl::Status RawDeleteForTest(Table table, std::string_view key);
  static std::string MetaKey(const SessionId& session);
  static std::string TokenLogKey(const SessionId& session, uint32_t turn);

  const std::string& dir() const { return dir_; }

 private:
  ColdStore() = default;
  rocksdb::ColumnFamilyHandle* Handle(Table table) const;
  absl::Status Write(Table table, std::string_view key, std::string_view value, bool sync);
  absl::StatusOr<std::string> Read(Table table, std::string_view key, const std::string& what);
  absl::StatusOr<uint32_t> TokenLogTurnsImpl(const SessionId& session);
  // AppendTokens' checks (token_mu_ held): true if the turn is to be written, false for an
  // idempotent retry of a stored turn, or why it cannot be appended.
  absl::StatusOr<bool> CheckAppend(const SessionId& session, uint32_t turn,
                                   std::span<const int32_t> tokens);
  // Deduplicated blocks (cold_store_blocks.cc); blob_mu_ held by the callers.
  struct Held {  // what a block key holds
    enum Kind { kAbsent, kInline, kRef } kind = kAbsent;
    std::string hash;  // kRef
  };
  struct Count {  // a value's references and bytes
    uint64_t refs = 0, bytes = 0;
  };
  struct Delta {  // what a batch changes in content_stats
    int64_t values = 0, bytes = 0, references = 0, referenced_bytes = 0;
  };
  absl::StatusOr<Held> HeldAt(const BlockKey& key);
  absl::StatusOr<Count> CountOf(const std::string& hash);
  // Drops `n` references to `hash` in `batch` (the value too when none remain).
  absl::Status Unref(rocksdb::WriteBatch& batch, const std::string& hash, uint64_t n, Delta* d);
  // Writes the batch (synced with `sync`) and applies `d` to the stats.
  absl::Status WriteBlocks(rocksdb::WriteBatch& batch, const Delta& d, const std::string& what,
                           bool sync = false);
  absl::StatusOr<std::string> Resolve(const BlockKey& key, std::string_view stored);
  absl::StatusOr<std::string> GetBlockLocked(const BlockKey& key);
  absl::Status AliasLocked(const std::string& hash, const BlockKey& to);
  // The session's block keys with what they store (a reference or the bytes), in key order.
  absl::Status ForEachRaw(
      const SessionId& session,
      absl::FunctionRef<absl::Status(const BlockKey& key, std::string_view stored)> fn);
  // The sessions' references to the value (DeleteSession: their counts go down in the same batch).
  absl::Status UnrefSession(rocksdb::WriteBatch& batch, const SessionId& session, Delta* d);
  absl::Status Sweep();
  absl::Status CountReferences(std::map<std::string, uint64_t>* refs);  // hash -> keys naming it
  absl::Status DropDangling(rocksdb::WriteBatch& batch,
                            const std::map<std::string, uint64_t>& present);

  std::string dir_;
  bool sync_ = true;
  std::unique_ptr<RocksDb> rocks_;
  rocksdb::DB* db_ = nullptr;  // rocks_'s
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  rocksdb::ColumnFamilyHandle* tokens_ = nullptr;
  rocksdb::ColumnFamilyHandle* blocks_ = nullptr;
  rocksdb::ColumnFamilyHandle* content_ = nullptr;
  absl::Mutex token_mu_;  // serializes token-log read-modify-write sequences
  // Serializes block reference-count updates (after token_mu_ where both are taken).
  mutable absl::Mutex blob_mu_;
  ContentStats stats_ ABSL_GUARDED_BY(blob_mu_);
  SweepReport swept_;
  bool sweep_failed_ = false;
};

}  // namespace rsd
