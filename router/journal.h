// The router's session journal: RocksDB on the router's --data-dir (DESIGN.md section 5, "Turn
// commit"). It is the router's whole durable state: a restarted router rebuilds its view of every
// session (owner, epoch, tenant, committed turns) from it.
//
// Column families and keys (big-endian, so a session's turns are one contiguous key range in turn
// order):
//   sessions  session(16)             → SessionRecord (CBOR)
//   turns     session(16) | turn(4)   → TurnRecord (CBOR); turn is 1-based
//   pending   session(16)             → PendingRecord (CBOR): the turn being forwarded, if any
//   keys      key id (16 hex)         → KeyRecord (CBOR): API keys, hashed (api_keys.h owns them)
//
// Durability: every write (PutSession, SetOwner, PutPending, CommitTurn, RemoveLastTurn,
// DeleteSession) returns after the WAL is fsynced, so a turn the client was told is committed, a
// seed a retried turn must reuse, and a change of owner survive a router crash.
//
// Thread-safe: every method may be called concurrently; read-modify-write sequences (removing the
// last turn) are serialized by an internal mutex. Every method blocks on disk I/O.
// Errors: NOT_FOUND naming the session for an absent session; DATA_LOSS for an undecodable record
// or RocksDB corruption; INTERNAL / RESOURCE_EXHAUSTED (disk full) for other I/O errors.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "storage/common/ids.h"
#include "storage/rocks_db.h"

namespace rocksdb {
class ColumnFamilyHandle;
class DB;
class FileSystem;
}  // namespace rocksdb

namespace rsd::router {

// What the router knows about a session apart from its turns.
struct SessionRecord {
  SessionId id;
  std::string tenant;
  std::string model;
  std::string worker;  // owner worker id
  uint64_t epoch = 1;  // ownership epoch; incremented on every change of owner
  std::string model_fingerprint;  // of the worker it was created on ("" in older records)
  uint32_t ttl_seconds = 0;
  bool pin = false;
  int32_t priority = 0;
  int64_t created_unix_ms = 0;
  friend bool operator==(const SessionRecord&, const SessionRecord&) = default;
};

// One committed turn: the request as the worker ran it (with the seed it ran with) and its result.
struct TurnRecord {
  uint32_t turn = 0;  // 1-based
  std::string turn_id;
  std::string message;  // user text, bytes as sent
  uint64_t seed = 0;
  float temperature = 0;
  int32_t top_k = 0;
  std::optional<float> top_p;
  std::optional<int32_t> max_tokens;
  std::vector<std::string> stop;
  std::vector<int32_t> tokens;  // generated tokens
  std::string text;             // their text (bytes; may hold U+FFFD replacements)
  std::string finish_reason;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t history_tokens = 0;  // the session's token log after the turn
  int64_t reused_tokens = 0;   // of prompt_tokens, copied from another session (prefix reuse)
  std::string worker;          // the worker that ran it
  int64_t committed_unix_ms = 0;
  // Everything the turn appended to the session's token log (template, generated, end of turn);
  // empty in records older than migration. A session is rebuilt elsewhere from these.
  std::vector<int32_t> log_tokens;
  friend bool operator==(const TurnRecord&, const TurnRecord&) = default;
};

// The turn being forwarded to the owner, journaled (synced) before it is: if the owner dies
// mid-turn, the retried turn id runs elsewhere with the same seed and parameters.
struct PendingRecord {
  std::string turn_id;
  std::string message;
  uint64_t seed = 0;
  float temperature = 0;
  int32_t top_k = 0;
  std::optional<float> top_p;
  std::optional<int32_t> max_tokens;
  std::vector<std::string> stop;
  int64_t started_unix_ms = 0;
  friend bool operator==(const PendingRecord&, const PendingRecord&) = default;
};

class Journal {
 public:
  // Opens (creating if needed) the journal in `dir`. A missing `dir` is created only if its parent
  // exists. FAILED_PRECONDITION naming the path if the parent is missing, `dir` is not a directory
  // or the journal is already open (RocksDB's lock, e.g. a second router on the same dir);
  // PERMISSION_DENIED naming the path if it cannot be read, written or created; DATA_LOSS on
  // corruption. `file_system`: what to write through (null: the local one; tests inject faults).
  static absl::StatusOr<std::unique_ptr<Journal>> Open(
      const std::string& dir, std::shared_ptr<rocksdb::FileSystem> file_system = nullptr);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Creates or replaces the session's record (synced).
  absl::Status PutSession(const SessionRecord& session);
  // NOT_FOUND "unknown session <hex>" if absent.
  absl::StatusOr<SessionRecord> GetSession(const SessionId& id);
  // Every session in id order.
  absl::StatusOr<std::vector<SessionRecord>> ListSessions();
  // Up to `limit` sessions with ids after `after` (null: from the first) that `keep` accepts
  // (null: all), in id order; `*more` tells whether any session lies beyond the last one read.
  absl::StatusOr<std::vector<SessionRecord>> ListSessionsPage(
      const SessionId* after, size_t limit, const std::function<bool(const SessionRecord&)>& keep,
      bool* more);
  // Removes the session, its turns and its pending turn (synced). Deleting an absent session is OK.
  absl::Status DeleteSession(const SessionId& id);
  // Moves the session to `worker` at `epoch` (synced) if its epoch is still `expected_epoch`;
  // returns the updated record. NOT_FOUND if absent; FAILED_PRECONDITION naming both epochs if the
  // session changed owner meanwhile; INVALID_ARGUMENT unless epoch > expected_epoch.
  absl::StatusOr<SessionRecord> SetOwner(const SessionId& id, const std::string& worker,
                                         uint64_t epoch, uint64_t expected_epoch);

  // Records the session's pending turn (synced), replacing any other. NOT_FOUND if the session is
  // unknown.
  absl::Status PutPending(const SessionId& id, const PendingRecord& pending);
  // The session's pending turn, if any.
  absl::StatusOr<std::optional<PendingRecord>> GetPending(const SessionId& id);

  // Records a committed turn under its index (synced), and clears the pending turn if it has the
  // same turn id (one atomic write). NOT_FOUND if the session is unknown; INVALID_ARGUMENT if
  // turn.turn is 0. Re-committing an existing index replaces it (the worker's numbering is the
  // truth).
  absl::Status CommitTurn(const SessionId& id, const TurnRecord& turn);
  // Every committed turn of the session, turn 1 first.
  absl::StatusOr<std::vector<TurnRecord>> ListTurns(const SessionId& id);
  // The committed turn with this client turn id, if any (turn_id must be non-empty).
  absl::StatusOr<std::optional<TurnRecord>> FindTurn(const SessionId& id,
                                                     const std::string& turn_id);
  // The last committed turn, if any.
  absl::StatusOr<std::optional<TurnRecord>> LastTurn(const SessionId& id);
  // The number of the last committed turn (0: none), from its key alone (no record decoded).
  absl::StatusOr<uint32_t> TurnCount(const SessionId& id);
  // Removes the last committed turn (synced) and returns its index; 0 if there was none.
  absl::StatusOr<uint32_t> RemoveLastTurn(const SessionId& id);

  const std::string& dir() const { return dir_; }
  // The journal's database, for the stores that share it (the KeyStore's "keys" family).
  RocksDb* rocks() { return rocks_.get(); }

  // Keys, exposed for tests of their ordering.
  static std::string SessionKey(const SessionId& id);
  static std::string TurnKey(const SessionId& id, uint32_t turn);

 private:
  Journal() = default;
  // `whole`: the decoded record; else only its `turn` (from the key).
  absl::StatusOr<std::optional<TurnRecord>> LastTurnLocked(const SessionId& id, bool whole = true);

  std::string dir_;
  std::unique_ptr<RocksDb> rocks_;
  rocksdb::DB* db_ = nullptr;  // rocks_'s
  rocksdb::ColumnFamilyHandle* sessions_ = nullptr;
  rocksdb::ColumnFamilyHandle* turns_ = nullptr;
  rocksdb::ColumnFamilyHandle* pending_ = nullptr;
  absl::Mutex mu_;  // serializes read-modify-write sequences on turns
};

// Record codecs (CBOR), exposed for tests. Decode: DATA_LOSS naming `what` if malformed.
std::string EncodeSessionRecord(const SessionRecord& s);
absl::StatusOr<SessionRecord> DecodeSessionRecord(const std::string& bytes, const std::string& what);
std::string EncodeTurnRecord(const TurnRecord& t);
absl::StatusOr<TurnRecord> DecodeTurnRecord(const std::string& bytes, const std::string& what);
std::string EncodePendingTurn(const PendingRecord& p);
absl::StatusOr<PendingRecord> DecodePendingTurn(const std::string& bytes, const std::string& what);

}  // namespace rsd::router
