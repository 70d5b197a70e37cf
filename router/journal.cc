#include "router/journal.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
#include "storage/common/status.h"
#include "storage/rocksdb_status.h"

namespace rsd::router {
namespace {

constexpr char kSessionsCf[] = "sessions";
constexpr char kTurnsCf[] = "turns";
constexpr char kPendingCf[] = "pending";
constexpr char kKeysCf[] = "keys";  // KeyStore::kFamily

rocksdb::WriteOptions Synced() {
  rocksdb::WriteOptions w;
  w.sync = true;
  return w;
}

std::string UpperBound(const SessionId& id) {
  std::string out(id.AsStringView());
  out.append(5, '\xff');
  return out;
}

uint32_t TurnOfKey(const rocksdb::Slice& key) {
  uint32_t v = 0;
  for (size_t i = SessionId::kSize; i < SessionId::kSize + 4 && i < key.size(); ++i) {
    v = v << 8 | static_cast<uint8_t>(key[i]);
  }
  return v;
}

}  // namespace

std::string Journal::SessionKey(const SessionId& id) { return std::string(id.AsStringView()); }

std::string Journal::TurnKey(const SessionId& id, uint32_t turn) {
  std::string out(id.AsStringView());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(turn >> (24 - 8 * i)));
  return out;
}

absl::StatusOr<std::unique_ptr<Journal>> Journal::Open(
    const std::string& dir, std::shared_ptr<rocksdb::FileSystem> file_system) {
  std::unique_ptr<Journal> j(new Journal());
  j->dir_ = dir;
  RocksDb::Options o;
  o.what = "router";
  o.file_system = std::move(file_system);
  for (const char* name : {kSessionsCf, kTurnsCf, kPendingCf, kKeysCf}) {
    o.families.push_back({name, rocksdb::ColumnFamilyOptions()});
  }
  RSD_ASSIGN_OR_RETURN(j->rocks_, RocksDb::Open(dir, std::move(o)));
  j->db_ = j->rocks_->db();
  j->sessions_ = j->rocks_->family(kSessionsCf);
  j->turns_ = j->rocks_->family(kTurnsCf);
  j->pending_ = j->rocks_->family(kPendingCf);
  return j;
}

Journal::~Journal() = default;

absl::Status Journal::PutSession(const SessionRecord& session) {
  return FromRocksDb(
      db_->Put(Synced(), sessions_, SessionKey(session.id), EncodeSessionRecord(session)),
      absl::StrCat("journal session ", session.id.ToHex()));
}

absl::StatusOr<SessionRecord> Journal::GetSession(const SessionId& id) {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), sessions_, SessionKey(id), &value);
  if (s.IsNotFound()) return absl::NotFoundError(absl::StrCat("unknown session ", id.ToHex()));
  RSD_RETURN_IF_ERROR(FromRocksDb(s, absl::StrCat("read journal of session ", id.ToHex())));
  return DecodeSessionRecord(value, absl::StrCat("journal record of session ", id.ToHex()));
}

absl::StatusOr<std::vector<SessionRecord>> Journal::ListSessions() {
  std::vector<SessionRecord> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), sessions_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    RSD_ASSIGN_OR_RETURN(SessionRecord s,
                         DecodeSessionRecord(it->value().ToString(),
                                             absl::StrCat("journal ", dir_, " session record")));
    out.push_back(std::move(s));
  }
  RSD_RETURN_IF_ERROR(FromRocksDb(it->status(), absl::StrCat("list sessions in journal ", dir_)));
  return out;
}

absl::StatusOr<std::vector<SessionRecord>> Journal::ListSessionsPage(
    const SessionId* after, size_t limit, const std::function<bool(const SessionRecord&)>& keep,
    bool* more) {
  std::vector<SessionRecord> out;
  *more = false;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), sessions_));
  if (after == nullptr) {
    it->SeekToFirst();
  } else {
    const std::string key = SessionKey(*after);
    it->Seek(key);
    if (it->Valid() && it->key().ToString() == key) it->Next();
  }
  for (; it->Valid(); it->Next()) {
    if (out.size() == limit) {
      *more = true;
      break;
    }
    RSD_ASSIGN_OR_RETURN(SessionRecord s,
                         DecodeSessionRecord(it->value().ToString(),
                                             absl::StrCat("journal ", dir_, " session record")));
    if (!keep || keep(s)) out.push_back(std::move(s));
  }
  RSD_RETURN_IF_ERROR(FromRocksDb(it->status(), absl::StrCat("list sessions in journal ", dir_)));
  return out;
}

absl::Status Journal::DeleteSession(const SessionId& id) {
  absl::MutexLock lock(&mu_);
  rocksdb::WriteBatch batch;
  RSD_RETURN_IF_ERROR(FromRocksDb(batch.Delete(sessions_, SessionKey(id)), "batch delete"));
  RSD_RETURN_IF_ERROR(FromRocksDb(
      batch.DeleteRange(turns_, std::string(id.AsStringView()), UpperBound(id)), "batch delete"));
  RSD_RETURN_IF_ERROR(FromRocksDb(batch.Delete(pending_, SessionKey(id)), "batch delete"));
  return FromRocksDb(db_->Write(Synced(), &batch),
                     absl::StrCat("delete session ", id.ToHex(), " from the journal"));
}

absl::Status Journal::CommitTurn(const SessionId& id, const TurnRecord& turn) {
  if (turn.turn == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("session ", id.ToHex(), ": turn index 0 (turns are 1-based)"));
  }
  absl::MutexLock lock(&mu_);
  RSD_RETURN_IF_ERROR(GetSession(id).status());
  rocksdb::WriteBatch batch;
  RSD_RETURN_IF_ERROR(
      FromRocksDb(batch.Put(turns_, TurnKey(id, turn.turn), EncodeTurnRecord(turn)), "batch put"));
  if (!turn.turn_id.empty()) {
    RSD_ASSIGN_OR_RETURN(std::optional<PendingRecord> pending, GetPending(id));
    if (pending.has_value() && pending->turn_id == turn.turn_id) {
      RSD_RETURN_IF_ERROR(FromRocksDb(batch.Delete(pending_, SessionKey(id)), "batch delete"));
    }
  }
  return FromRocksDb(db_->Write(Synced(), &batch),
                     absl::StrCat("journal turn ", turn.turn, " of session ", id.ToHex()));
}

absl::StatusOr<SessionRecord> Journal::SetOwner(const SessionId& id, const std::string& worker,
                                                uint64_t epoch, uint64_t expected_epoch) {
  if (epoch <= expected_epoch) {
    return absl::InvalidArgumentError(absl::StrCat("session ", id.ToHex(), ": new epoch ", epoch,
                                                   " is not above epoch ", expected_epoch));
  }
  absl::MutexLock lock(&mu_);
  RSD_ASSIGN_OR_RETURN(SessionRecord rec, GetSession(id));
  if (rec.epoch != expected_epoch) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", id.ToHex(), " changed owner meanwhile: it is at epoch ", rec.epoch,
        " on worker '", rec.worker, "', not at epoch ", expected_epoch));
  }
  rec.worker = worker;
  rec.epoch = epoch;
  RSD_RETURN_IF_ERROR(PutSession(rec));
  return rec;
}

absl::Status Journal::PutPending(const SessionId& id, const PendingRecord& pending) {
  absl::MutexLock lock(&mu_);
  RSD_RETURN_IF_ERROR(GetSession(id).status());
  return FromRocksDb(
      db_->Put(Synced(), pending_, SessionKey(id), EncodePendingTurn(pending)),
      absl::StrCat("journal pending turn '", pending.turn_id, "' of session ", id.ToHex()));
}

absl::StatusOr<std::optional<PendingRecord>> Journal::GetPending(const SessionId& id) {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), pending_, SessionKey(id), &value);
  if (s.IsNotFound()) return std::optional<PendingRecord>();
  RSD_RETURN_IF_ERROR(FromRocksDb(s, absl::StrCat("read pending turn of session ", id.ToHex())));
  RSD_ASSIGN_OR_RETURN(
      PendingRecord p,
      DecodePendingTurn(value, absl::StrCat("journal pending turn of session ", id.ToHex())));
  return std::optional<PendingRecord>(std::move(p));
}

absl::StatusOr<std::vector<TurnRecord>> Journal::ListTurns(const SessionId& id) {
  const std::string lower(id.AsStringView());
  const std::string upper = UpperBound(id);
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  std::vector<TurnRecord> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, turns_));
  for (it->Seek(lower); it->Valid(); it->Next()) {
    const std::string what =
        absl::StrCat("journal turn ", TurnOfKey(it->key()), " of session ", id.ToHex());
    RSD_ASSIGN_OR_RETURN(TurnRecord t, DecodeTurnRecord(it->value().ToString(), what));
    out.push_back(std::move(t));
  }
  RSD_RETURN_IF_ERROR(
      FromRocksDb(it->status(), absl::StrCat("list turns of session ", id.ToHex())));
  return out;
}

absl::StatusOr<std::optional<TurnRecord>> Journal::FindTurn(const SessionId& id,
                                                            const std::string& turn_id) {
  if (turn_id.empty()) return std::optional<TurnRecord>();
  RSD_ASSIGN_OR_RETURN(std::vector<TurnRecord> turns, ListTurns(id));
  for (TurnRecord& t : turns) {
    if (t.turn_id == turn_id) return std::optional<TurnRecord>(std::move(t));
  }
  return std::optional<TurnRecord>();
}

absl::StatusOr<std::optional<TurnRecord>> Journal::LastTurnLocked(const SessionId& id, bool whole) {
  const std::string lower(id.AsStringView());
  const std::string upper = UpperBound(id);
  rocksdb::Slice lower_slice(lower);
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lower_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, turns_));
  it->SeekForPrev(upper);
  if (!it->Valid()) {
    RSD_RETURN_IF_ERROR(
        FromRocksDb(it->status(), absl::StrCat("last turn of session ", id.ToHex())));
    return std::optional<TurnRecord>();
  }
  if (!whole) {
    TurnRecord t;
    t.turn = TurnOfKey(it->key());
    return std::optional<TurnRecord>(std::move(t));
  }
  const std::string what =
      absl::StrCat("journal turn ", TurnOfKey(it->key()), " of session ", id.ToHex());
  RSD_ASSIGN_OR_RETURN(TurnRecord t, DecodeTurnRecord(it->value().ToString(), what));
  return std::optional<TurnRecord>(std::move(t));
}

absl::StatusOr<uint32_t> Journal::TurnCount(const SessionId& id) {
  absl::MutexLock lock(&mu_);
  RSD_ASSIGN_OR_RETURN(std::optional<TurnRecord> last, LastTurnLocked(id, /*whole=*/false));
  return last.has_value() ? last->turn : 0u;
}

absl::StatusOr<std::optional<TurnRecord>> Journal::LastTurn(const SessionId& id) {
  absl::MutexLock lock(&mu_);
  return LastTurnLocked(id);
}

absl::StatusOr<uint32_t> Journal::RemoveLastTurn(const SessionId& id) {
  absl::MutexLock lock(&mu_);
  RSD_ASSIGN_OR_RETURN(std::optional<TurnRecord> last, LastTurnLocked(id));
  if (!last.has_value()) return 0u;
  RSD_RETURN_IF_ERROR(FromRocksDb(
      db_->Delete(Synced(), turns_, TurnKey(id, last->turn)),
      absl::StrCat("remove turn ", last->turn, " of session ", id.ToHex(), " from the journal")));
  return last->turn;
}

}  // namespace rsd::router
