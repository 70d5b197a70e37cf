// ColdStore's checkpoint blocks, stored once per content (issue #15; the format and the crash
// argument are in cold_store.h). Split from cold_store.cc by concern.
#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"
#include "storage/cold_store.h"
#include "storage/cold_store_internal.h"
#include "storage/common/hash.h"
#include "storage/common/log.h"
#include "storage/common/status.h"
#include "storage/rocksdb_status.h"

namespace rsd {
namespace {

constexpr char kRefMagic[4] = {'R', 'S', 'D', 'C'};
constexpr size_t kHashSize = 16;
constexpr size_t kRefSize = sizeof(kRefMagic) + kHashSize;

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

std::string ContentHash(std::string_view value) {
  Hasher h;
  h.Update(value);
  return h.Digest();
}

std::string RefTo(const std::string& hash) { return std::string(kRefMagic, 4) + hash; }

// The hash a stored block value refers to; nullopt for bytes stored inline.
std::optional<std::string> RefOf(std::string_view stored) {
  if (stored.size() != kRefSize || std::memcmp(stored.data(), kRefMagic, 4) != 0) {
    return std::nullopt;
  }
  return std::string(stored.substr(4));
}

std::string ValueKey(const std::string& hash) { return "v" + hash; }
std::string CountKey(const std::string& hash) { return "n" + hash; }

std::string EncodeCount(uint64_t refs, uint64_t bytes) {
  std::string out(16, '\0');
  std::memcpy(out.data(), &refs, 8);  // little-endian hosts only (as the token records)
  std::memcpy(out.data() + 8, &bytes, 8);
  return out;
}

}  // namespace

absl::StatusOr<ColdStore::Held> ColdStore::HeldAt(const BlockKey& key) {
  rocksdb::PinnableSlice v;
  const rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), blocks_, key.Encode(), &v);
  Held out;
  if (s.IsNotFound()) return out;
  RSD_RETURN_IF_ERROR(FromRocksDb(s, absl::StrCat("block ", key.ToString())));
  std::optional<std::string> ref = RefOf(std::string_view(v.data(), v.size()));
  out.kind = ref ? Held::kRef : Held::kInline;
  if (ref) out.hash = *std::move(ref);
  return out;
}

absl::StatusOr<ColdStore::Count> ColdStore::CountOf(const std::string& hash) {
  rocksdb::PinnableSlice v;
  const rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), content_, CountKey(hash), &v);
  Count c;
  if (s.IsNotFound()) return c;
  RSD_RETURN_IF_ERROR(FromRocksDb(s, "block reference count"));
  if (v.size() != 16) {
    return absl::DataLossError(absl::StrCat("cold store ", dir_, ": a block reference count of ",
                                            v.size(), " bytes, want 16"));
  }
  std::memcpy(&c.refs, v.data(), 8);
  std::memcpy(&c.bytes, v.data() + 8, 8);
  return c;
}

absl::Status ColdStore::Unref(rocksdb::WriteBatch& batch, const std::string& hash, uint64_t n,
                              Delta* d) {
  RSD_ASSIGN_OR_RETURN(Count c, CountOf(hash));
  d->references -= static_cast<int64_t>(std::min(n, c.refs));
  d->referenced_bytes -= static_cast<int64_t>(std::min(n, c.refs) * c.bytes);
  if (c.refs > n) {
    return FromRocksDb(batch.Put(content_, CountKey(hash), EncodeCount(c.refs - n, c.bytes)),
                       "batch");
  }
  if (c.refs > 0) {
    d->values--;
    d->bytes -= static_cast<int64_t>(c.bytes);
  }
  RSD_RETURN_IF_ERROR(FromRocksDb(batch.Delete(content_, CountKey(hash)), "batch"));
  return FromRocksDb(batch.Delete(content_, ValueKey(hash)), "batch");
}

absl::Status ColdStore::WriteBlocks(rocksdb::WriteBatch& batch, const Delta& d,
                                    const std::string& what, bool sync) {
  rocksdb::WriteOptions w;
  w.sync = sync;
  RSD_RETURN_IF_ERROR(FromRocksDb(db_->Write(w, &batch), what));
  stats_.values += d.values;
  stats_.bytes += d.bytes;
  stats_.references += d.references;
  stats_.referenced_bytes += d.referenced_bytes;
  return absl::OkStatus();
}

absl::Status ColdStore::PutBlock(const BlockKey& key, std::string_view value) {
  absl::MutexLock lock(&blob_mu_);
  const std::string hash = ContentHash(value);
  RSD_ASSIGN_OR_RETURN(const Held old, HeldAt(key));
  if (old.kind == Held::kRef && old.hash == hash) return absl::OkStatus();
  RSD_ASSIGN_OR_RETURN(const Count c, CountOf(hash));
  rocksdb::WriteBatch batch;
  Delta d;
  bool by_reference = true;
  if (c.refs > 0) {
    // Equal hashes, so almost surely equal bytes: compared, so that a collision costs only the
    // sharing (the value is kept under its own key).
    rocksdb::PinnableSlice stored;
    RSD_RETURN_IF_ERROR(FromRocksDb(
        db_->Get(rocksdb::ReadOptions(), content_, ValueKey(hash), &stored), "block value"));
    by_reference = std::string_view(stored.data(), stored.size()) == value;
  } else {
    RSD_RETURN_IF_ERROR(FromRocksDb(batch.Put(content_, ValueKey(hash), ToSlice(value)), "batch"));
    d.values++;
    d.bytes += static_cast<int64_t>(value.size());
  }
  if (by_reference) {
    RSD_RETURN_IF_ERROR(FromRocksDb(
        batch.Put(content_, CountKey(hash), EncodeCount(c.refs + 1, value.size())), "batch"));
    RSD_RETURN_IF_ERROR(FromRocksDb(batch.Put(blocks_, key.Encode(), RefTo(hash)), "batch"));
    d.references++;
    d.referenced_bytes += static_cast<int64_t>(value.size());
  } else {
    RSD_RETURN_IF_ERROR(FromRocksDb(batch.Put(blocks_, key.Encode(), ToSlice(value)), "batch"));
  }
  if (old.kind == Held::kRef) RSD_RETURN_IF_ERROR(Unref(batch, old.hash, 1, &d));
  return WriteBlocks(batch, d, absl::StrCat("put block ", key.ToString()));
}

absl::Status ColdStore::AliasBlock(const BlockKey& from, const BlockKey& to) {
  std::optional<std::string> inline_value;
  {
    absl::MutexLock lock(&blob_mu_);
    RSD_ASSIGN_OR_RETURN(const Held src, HeldAt(from));
    if (src.kind == Held::kAbsent) {
      return absl::NotFoundError(absl::StrCat("block ", from.ToString(), " not found in ", dir_));
    }
    if (src.kind == Held::kRef) return AliasLocked(src.hash, to);
    RSD_ASSIGN_OR_RETURN(inline_value, GetBlockLocked(from));
  }
  return PutBlock(to, *inline_value);  // stored by content from now on
}

absl::Status ColdStore::AliasLocked(const std::string& hash, const BlockKey& to) {
  const Held src{Held::kRef, hash};
  RSD_ASSIGN_OR_RETURN(const Held old, HeldAt(to));
  if (old.kind == Held::kRef && old.hash == src.hash) return absl::OkStatus();
  RSD_ASSIGN_OR_RETURN(const Count c, CountOf(src.hash));
  rocksdb::WriteBatch batch;
  Delta d;
  RSD_RETURN_IF_ERROR(FromRocksDb(
      batch.Put(content_, CountKey(src.hash), EncodeCount(c.refs + 1, c.bytes)), "batch"));
  RSD_RETURN_IF_ERROR(FromRocksDb(batch.Put(blocks_, to.Encode(), RefTo(src.hash)), "batch"));
  d.references++;
  d.referenced_bytes += static_cast<int64_t>(c.bytes);
  if (old.kind == Held::kRef) RSD_RETURN_IF_ERROR(Unref(batch, old.hash, 1, &d));
  return WriteBlocks(batch, d, absl::StrCat("alias block as ", to.ToString()));
}

absl::StatusOr<std::string> ColdStore::Resolve(const BlockKey& key, std::string_view stored) {
  std::optional<std::string> hash = RefOf(stored);
  if (!hash) return std::string(stored);
  rocksdb::PinnableSlice v;
  const rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), content_, ValueKey(*hash), &v);
  if (s.IsNotFound()) {
    return absl::DataLossError(
        absl::StrCat("block ", key.ToString(), " in ", dir_, " refers to a value that is missing"));
  }
  RSD_RETURN_IF_ERROR(FromRocksDb(s, absl::StrCat("value of block ", key.ToString())));
  return std::string(v.data(), v.size());
}

absl::StatusOr<std::string> ColdStore::GetBlockLocked(const BlockKey& key) {
  RSD_ASSIGN_OR_RETURN(std::string stored,
                       Read(Table::kBlocks, key.Encode(), absl::StrCat("block ", key.ToString())));
  return Resolve(key, stored);
}

absl::StatusOr<std::string> ColdStore::GetBlock(const BlockKey& key) {
  absl::MutexLock lock(&blob_mu_);  // a value is not deleted between the reference and its read
  return GetBlockLocked(key);
}

absl::Status ColdStore::DeleteBlock(const BlockKey& key) {
  absl::MutexLock lock(&blob_mu_);
  RSD_ASSIGN_OR_RETURN(const Held old, HeldAt(key));
  if (old.kind == Held::kAbsent) return absl::OkStatus();
  rocksdb::WriteBatch batch;
  Delta d;
  RSD_RETURN_IF_ERROR(FromRocksDb(batch.Delete(blocks_, key.Encode()), "batch"));
  if (old.kind == Held::kRef) RSD_RETURN_IF_ERROR(Unref(batch, old.hash, 1, &d));
  return WriteBlocks(batch, d, absl::StrCat("delete block ", key.ToString()));
}

absl::Status ColdStore::ForEachRaw(
    const SessionId& session,
    absl::FunctionRef<absl::Status(const BlockKey& key, std::string_view stored)> fn) {
  const std::string lower(session.AsStringView());
  const std::string upper = cold_internal::SessionUpperBound(session);
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, blocks_));
  for (it->Seek(lower); it->Valid(); it->Next()) {
    std::optional<BlockKey> key =
        BlockKey::Decode(std::string_view(it->key().data(), it->key().size()));
    if (!key.has_value()) {
      return absl::DataLossError(absl::StrCat("session ", session.ToHex(), ": block key of ",
                                              it->key().size(), " bytes, want 24"));
    }
    RSD_RETURN_IF_ERROR(fn(*key, std::string_view(it->value().data(), it->value().size())));
  }
  return FromRocksDb(it->status(), absl::StrCat("iterate blocks of session ", session.ToHex()));
}

absl::Status ColdStore::ForEachBlock(
    const SessionId& session,
    absl::FunctionRef<absl::Status(const BlockKey& key, std::string_view value)> fn) {
  return ForEachRaw(session, [&](const BlockKey& key, std::string_view stored) -> absl::Status {
    if (!RefOf(stored)) return fn(key, stored);
    std::string value;
    {
      // The reference again under the lock (a value is not deleted between it and its read);
      // `fn` runs without it, so it may call the store.
      absl::MutexLock lock(&blob_mu_);
      absl::StatusOr<std::string> got = GetBlockLocked(key);
      if (absl::IsNotFound(got.status())) return absl::OkStatus();  // deleted meanwhile
      RSD_RETURN_IF_ERROR(got.status());
      value = *std::move(got);
    }
    return fn(key, value);
  });
}

absl::StatusOr<std::vector<BlockKey>> ColdStore::BlockKeys(const SessionId& session) {
  std::vector<BlockKey> keys;
  RSD_RETURN_IF_ERROR(ForEachRaw(session, [&](const BlockKey& key, std::string_view) {
    keys.push_back(key);
    return absl::OkStatus();
  }));
  return keys;
}

absl::StatusOr<int64_t> ColdStore::SessionBlockBytes(const SessionId& session) {
  absl::MutexLock lock(&blob_mu_);
  int64_t total = 0;
  RSD_RETURN_IF_ERROR(ForEachRaw(session, [&](const BlockKey&, std::string_view stored) {
    std::optional<std::string> hash = RefOf(stored);
    if (!hash) {
      total += static_cast<int64_t>(stored.size());
      return absl::OkStatus();
    }
    RSD_ASSIGN_OR_RETURN(const Count c, CountOf(*hash));
    total += static_cast<int64_t>(c.bytes);
    return absl::OkStatus();
  }));
  return total;
}

absl::Status ColdStore::UnrefSession(rocksdb::WriteBatch& batch, const SessionId& session,
                                     Delta* d) {
  std::map<std::string, uint64_t> refs;
  RSD_RETURN_IF_ERROR(ForEachRaw(session, [&](const BlockKey&, std::string_view stored) {
    if (std::optional<std::string> hash = RefOf(stored)) refs[*hash]++;
    return absl::OkStatus();
  }));
  for (const auto& [hash, n] : refs) RSD_RETURN_IF_ERROR(Unref(batch, hash, n, d));
  return absl::OkStatus();
}

ColdStore::ContentStats ColdStore::content_stats() const {
  absl::MutexLock lock(&blob_mu_);
  return stats_;
}

absl::Status ColdStore::CountReferences(std::map<std::string, uint64_t>* refs) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), blocks_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::optional<std::string> hash =
        RefOf(std::string_view(it->value().data(), it->value().size()));
    if (hash) (*refs)[*hash]++;
  }
  return FromRocksDb(it->status(), "sweep: read block references");
}

absl::Status ColdStore::Sweep() {
  absl::MutexLock lock(&blob_mu_);
  std::map<std::string, uint64_t> refs;  // every reference, counted from the keys
  RSD_RETURN_IF_ERROR(CountReferences(&refs));
  // Against the values and counts stored.
  rocksdb::WriteBatch batch;
  std::map<std::string, uint64_t> present;  // hash -> bytes, of referenced values
  std::vector<std::string> counted;         // hashes with a count record
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), content_));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string_view k(it->key().data(), it->key().size());
      if (k.size() != 1 + kHashSize) continue;
      const std::string hash(k.substr(1));
      if (k[0] == 'n') counted.push_back(hash);
      if (k[0] != 'v') continue;
      if (!refs.count(hash)) {
        RSD_RETURN_IF_ERROR(FromRocksDb(batch.Delete(content_, ValueKey(hash)), "batch"));
        swept_.orphan_values++;
        continue;
      }
      present[hash] = it->value().size();
    }
    RSD_RETURN_IF_ERROR(FromRocksDb(it->status(), "sweep: read block values"));
  }
  for (const std::string& hash : counted) {
    if (!present.count(hash)) {
      RSD_RETURN_IF_ERROR(FromRocksDb(batch.Delete(content_, CountKey(hash)), "batch"));
    }
  }
  for (const auto& [hash, n] : refs) {
    auto value = present.find(hash);
    if (value == present.end()) {
      swept_.dangling_keys += static_cast<int64_t>(n);
      continue;
    }
    RSD_ASSIGN_OR_RETURN(const Count c, CountOf(hash));
    if (c.refs != n || c.bytes != value->second) {
      RSD_RETURN_IF_ERROR(
          FromRocksDb(batch.Put(content_, CountKey(hash), EncodeCount(n, value->second)), "batch"));
      swept_.fixed_counts++;
    }
    stats_.values++;
    stats_.bytes += static_cast<int64_t>(value->second);
    stats_.references += static_cast<int64_t>(n);
    stats_.referenced_bytes += static_cast<int64_t>(n * value->second);
  }
  if (swept_.dangling_keys > 0) RSD_RETURN_IF_ERROR(DropDangling(batch, present));
  if (batch.Count() == 0) return absl::OkStatus();
  log::Warn("cold store: block references repaired at open",
            {{"dir", dir_},
             {"orphan_values", std::to_string(swept_.orphan_values)},
             {"dangling_keys", std::to_string(swept_.dangling_keys)},
             {"fixed_counts", std::to_string(swept_.fixed_counts)}});
  return FromRocksDb(db_->Write(rocksdb::WriteOptions(), &batch), "sweep: repair");
}

absl::Status ColdStore::DropDangling(rocksdb::WriteBatch& batch,
                                     const std::map<std::string, uint64_t>& present) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), blocks_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::optional<std::string> hash =
        RefOf(std::string_view(it->value().data(), it->value().size()));
    // A key whose value is gone is no checkpoint: the session rebuilds from a smaller form or
    // its token log, as after any lost block.
    if (hash && !present.count(*hash)) {
      RSD_RETURN_IF_ERROR(FromRocksDb(batch.Delete(blocks_, it->key()), "batch"));
    }
  }
  return FromRocksDb(it->status(), "sweep: drop dangling references");
}

}  // namespace rsd
