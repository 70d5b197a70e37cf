#include "storage/cold_store.h"

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"
#include "storage/cold_store_internal.h"
#include "storage/common/log.h"
#include "storage/common/status.h"
#include "storage/rocksdb_status.h"

namespace rsd {
namespace {

constexpr char kMetaCf[] = "meta";
constexpr char kTokensCf[] = "tokens";
constexpr char kBlocksCf[] = "blocks";
constexpr char kContentCf[] = "content";

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

rocksdb::WriteOptions WriteOpts(bool sync) {
  rocksdb::WriteOptions w;
  w.sync = sync;
  return w;
}

rocksdb::ColumnFamilyOptions CfOptions(const std::string& name) {
  rocksdb::ColumnFamilyOptions cf;
  // Blocks arrive encoded (and zstd-compressed when the engine asks); a second compression pass
  // would only cost CPU.
  if (name == kContentCf) cf.compression = rocksdb::kNoCompression;
  // Memtables are process memory: keep them small so RSS stays within the tiers' budgets plus a
  // stated overhead (at most 2 x 8 MiB for block values, 2 x 2 MiB for the other families).
  cf.write_buffer_size = name == kContentCf ? (8u << 20) : (2u << 20);
  cf.max_write_buffer_number = 2;
  // Bloom filters: a point lookup skips table files that do not hold its key, so a damaged file
  // costs only the sessions whose keys are in it (salvage reads by point lookups), and a miss
  // reads no data block.
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return cf;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ColdStore>> ColdStore::Open(const std::string& dir,
                                                           ColdStoreOptions options) {
  std::unique_ptr<ColdStore> store(new ColdStore());
  store->dir_ = dir;
  store->sync_ = options.sync;
  RocksDb::Options o;
  o.what = "cold store";
  for (const char* name : {kMetaCf, kTokensCf, kBlocksCf, kContentCf})
    o.families.push_back({name, CfOptions(name)});
  o.db_write_buffer_size = 24u << 20;  // all memtables together
  o.file_system = options.file_system;
  RSD_ASSIGN_OR_RETURN(store->rocks_, RocksDb::Open(dir, std::move(o)));
  store->db_ = store->rocks_->db();
  store->meta_ = store->rocks_->family(kMetaCf);
  store->tokens_ = store->rocks_->family(kTokensCf);
  store->blocks_ = store->rocks_->family(kBlocksCf);
  store->content_ = store->rocks_->family(kContentCf);
  if (absl::Status swept = store->Sweep(); !swept.ok()) {
    // A damaged table file of blocks or values costs the checkpoints in it, not the store: the
    // sessions that need them rebuild from their token logs (and a store whose sessions cannot be
    // listed whole is salvaged by the session manager). The counters then cover what was read.
    log::Error("cold store: the block sweep could not read every block; not repaired",
               {{"dir", dir}, {"error", swept.ToString()}});
    store->sweep_failed_ = true;
  }
  return store;
}

ColdStore::~ColdStore() = default;

rocksdb::ColumnFamilyHandle* ColdStore::Handle(Table table) const {
  switch (table) {
    case Table::kMeta:
      return meta_;
    case Table::kTokens:
      return tokens_;
    case Table::kBlocks:
      return blocks_;
    case Table::kContent:
      return content_;
  }
  RSD_CHECK(false);
  return nullptr;
}

absl::Status ColdStore::Write(Table table, std::string_view key, std::string_view value,
                              bool sync) {
  return FromRocksDb(db_->Put(WriteOpts(sync), Handle(table), ToSlice(key), ToSlice(value)),
                     "cold store put");
}

absl::StatusOr<std::string> ColdStore::Read(Table table, std::string_view key,
                                            const std::string& what) {
  rocksdb::PinnableSlice value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), Handle(table), ToSlice(key), &value);
  if (s.IsNotFound()) return absl::NotFoundError(absl::StrCat(what, " not found in ", dir_));
  RSD_RETURN_IF_ERROR(FromRocksDb(s, what));
  return std::string(value.data(), value.size());
}

absl::Status ColdStore::PutMeta(const SessionId& session, std::string_view value) {
  return FromRocksDb(db_->Put(WriteOpts(sync_), meta_, MetaKey(session), ToSlice(value)),
                     absl::StrCat("put metadata of session ", session.ToHex()));
}

absl::StatusOr<std::string> ColdStore::GetMeta(const SessionId& session) {
  return Read(Table::kMeta, MetaKey(session),
              absl::StrCat("metadata of session ", session.ToHex()));
}

absl::Status ColdStore::DeleteSession(const SessionId& session, bool keep_blocks) {
  absl::MutexLock lock(&token_mu_);
  const std::string lower(session.AsStringView());
  const std::string upper = cold_internal::SessionUpperBound(session);
  rocksdb::WriteBatch batch;
  absl::MutexLock blobs(&blob_mu_);
  Delta d;
  if (!keep_blocks) RSD_RETURN_IF_ERROR(UnrefSession(batch, session, &d));
  for (rocksdb::ColumnFamilyHandle* h : {meta_, tokens_, blocks_}) {
    if (keep_blocks && h == blocks_) continue;
    RSD_RETURN_IF_ERROR(FromRocksDb(batch.DeleteRange(h, lower, upper), "delete range"));
  }
  return WriteBlocks(batch, d, absl::StrCat("delete session ", session.ToHex()), sync_);
}

absl::StatusOr<std::vector<SessionId>> ColdStore::ListSessions(bool* complete) {
  // Every session has keys in several families: one family that cannot be read to its end (a
  // damaged block) still leaves its sessions listed by the others, whose own reads then find the
  // damage and quarantine them (issue #14). Only when no family can be read is listing an error.
  std::set<SessionId> sessions;
  absl::Status last_error;
  int readable = 0;
  for (rocksdb::ColumnFamilyHandle* h : {meta_, tokens_, blocks_}) {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), h));
    absl::Status st;
    for (it->SeekToFirst(); it->Valid();) {
      if (it->key().size() < SessionId::kSize) {
        st = absl::DataLossError(absl::StrCat("cold store ", dir_, ": key of ", it->key().size(),
                                              " bytes in column family ", h->GetName()));
        break;
      }
      SessionId id = SessionId::FromBytes(
          {reinterpret_cast<const uint8_t*>(it->key().data()), SessionId::kSize});
      sessions.insert(id);
      it->Seek(cold_internal::SessionUpperBound(id));
    }
    if (st.ok()) st = FromRocksDb(it->status(), absl::StrCat("list sessions in ", h->GetName()));
    if (st.ok()) {
      ++readable;
    } else {
      log::Error("cold store: a column family cannot be listed to its end",
                 {{"dir", dir_}, {"family", h->GetName()}, {"error", std::string(st.message())}});
      last_error = st;
    }
  }
  if (readable == 0) return last_error;
  if (complete != nullptr) *complete = readable == 3;
  return std::vector<SessionId>(sessions.begin(), sessions.end());
}

absl::Status ColdStore::Flush() {
  return FromRocksDb(db_->Flush(rocksdb::FlushOptions(), {meta_, tokens_, blocks_, content_}),
                     absl::StrCat("flush ", dir_));
}

absl::Status ColdStore::RawPutForTest(Table table, std::string_view key, std::string_view value) {
  return Write(table, key, value, sync_);
}

absl::Status ColdStore::RawDeleteForTest(Table table, std::string_view key) {
  return FromRocksDb(db_->Delete(WriteOpts(sync_), Handle(table), ToSlice(key)), "raw delete");
}

absl::StatusOr<std::string> ColdStore::RawGetForTest(Table table, std::string_view key) {
  return Read(table, key, "raw key");
}

std::string ColdStore::MetaKey(const SessionId& session) {
  return std::string(session.AsStringView());
}

std::string ColdStore::TokenLogKey(const SessionId& session, uint32_t turn) {
  return cold_internal::TokenLogKey(session, turn);
}

}  // namespace rsd
