// ColdStore's token log: append-only records per session, synced (cold_store.h).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"
#include "storage/cold_store.h"
#include "storage/cold_store_internal.h"
#include "storage/common/status.h"
#include "storage/rocksdb_status.h"

namespace rsd {

using cold_internal::DecodeTokenRecord;
using cold_internal::SessionUpperBound;
using cold_internal::TokenLogKey;

absl::StatusOr<uint32_t> ColdStore::TokenLogTurnsImpl(const SessionId& session) {
  const std::string lower(session.AsStringView());
  const std::string upper = SessionUpperBound(session);
  rocksdb::Slice lower_slice(lower), upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lower_slice;
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, tokens_));
  it->SeekToLast();
  if (!it->Valid()) {
    RSD_RETURN_IF_ERROR(
        FromRocksDb(it->status(), absl::StrCat("token log of session ", session.ToHex())));
    return 0u;
  }
  std::string_view key(it->key().data(), it->key().size());
  if (key.size() != cold_internal::kTokenLogKeySize) {
    return absl::DataLossError(
        absl::StrCat("session ", session.ToHex(), ": token log key of ", key.size(), " bytes"));
  }
  const uint32_t last = cold_internal::TurnOfTokenLogKey(key);
  if (last == UINT32_MAX) {
    return absl::DataLossError(
        absl::StrCat("session ", session.ToHex(), ": token log turn ", last, " is out of range"));
  }
  return last + 1;
}

absl::StatusOr<uint32_t> ColdStore::TokenLogTurns(const SessionId& session) {
  absl::MutexLock lock(&token_mu_);
  return TokenLogTurnsImpl(session);
}

absl::StatusOr<bool> ColdStore::CheckAppend(const SessionId& session, uint32_t turn,
                                            std::span<const int32_t> tokens) {
  RSD_ASSIGN_OR_RETURN(uint32_t n, TokenLogTurnsImpl(session));
  const std::string key = TokenLogKey(session, turn);
  if (turn < n) {
    RSD_ASSIGN_OR_RETURN(
        std::string value,
        Read(Table::kTokens, key, absl::StrCat("session ", session.ToHex(), " turn ", turn)));
    RSD_ASSIGN_OR_RETURN(std::vector<int32_t> stored, DecodeTokenRecord(key, value));
    if (std::equal(stored.begin(), stored.end(), tokens.begin(), tokens.end())) {
      return false;  // an idempotent retry
    }
    return absl::AlreadyExistsError(absl::StrCat("session ", session.ToHex(), " turn ", turn,
                                                 " is already in the token log"
                                                 " with different tokens (",
                                                 stored.size(), " stored, ", tokens.size(),
                                                 " given)"));
  }
  if (turn > n) {
    return absl::FailedPreconditionError(absl::StrCat("session ", session.ToHex(),
                                                      ": cannot append turn ", turn,
                                                      ", the token log has ", n, " turns"));
  }
  return true;
}

absl::Status ColdStore::AppendTokens(const SessionId& session, uint32_t turn,
                                     std::span<const int32_t> tokens) {
  absl::MutexLock lock(&token_mu_);
  RSD_ASSIGN_OR_RETURN(const bool write, CheckAppend(session, turn, tokens));
  if (!write) return absl::OkStatus();
  const std::string key = TokenLogKey(session, turn);
  return Write(Table::kTokens, key, cold_internal::EncodeTokenRecord(key, tokens), sync_);
}

std::vector<absl::Status> ColdStore::CommitTurns(std::span<const TurnCommit> commits) {
  absl::MutexLock lock(&token_mu_);
  std::vector<absl::Status> out(commits.size());
  rocksdb::WriteBatch batch;
  for (size_t i = 0; i < commits.size(); ++i) {
    const TurnCommit& c = commits[i];
    const bool repeated = std::any_of(commits.begin(), commits.begin() + i,
                                      [&](const TurnCommit& e) { return e.session == c.session; });
    absl::StatusOr<bool> write =
        repeated ? absl::InvalidArgumentError(absl::StrCat("session ", c.session.ToHex(),
                                                           " has two turns in one group commit"))
                 : CheckAppend(c.session, c.turn, c.tokens);
    absl::Status st = write.status();
    if (st.ok() && *write) {
      const std::string key = TokenLogKey(c.session, c.turn);
      st = FromRocksDb(batch.Put(tokens_, key, cold_internal::EncodeTokenRecord(key, c.tokens)),
                       "commit batch");
    }
    if (st.ok()) st = FromRocksDb(batch.Put(meta_, MetaKey(c.session), c.meta), "commit batch");
    out[i] = st;
  }
  if (batch.Count() == 0) return out;
  rocksdb::WriteOptions wo;
  wo.sync = sync_;
  const absl::Status written = FromRocksDb(
      db_->Write(wo, &batch), absl::StrCat("group commit of ", batch.Count(), " records"));
  if (!written.ok()) {
    for (absl::Status& st : out) {
      if (st.ok()) st = written;
    }
  }
  return out;
}

absl::Status ColdStore::PutTokenLog(const SessionId& session, std::span<const int32_t> tokens,
                                    std::span<const int64_t> turn_ends) {
  absl::MutexLock lock(&token_mu_);
  RSD_ASSIGN_OR_RETURN(uint32_t n, TokenLogTurnsImpl(session));
  if (n != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("session ", session.ToHex(), " already has a token log of ", n, " turns"));
  }
  rocksdb::WriteBatch batch;
  int64_t begin = 0;
  for (size_t t = 0; t < turn_ends.size(); ++t) {
    const int64_t end = turn_ends[t];
    if (end <= begin || end > static_cast<int64_t>(tokens.size()) || t >= UINT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat("session ", session.ToHex(), ": turn ", t,
                                                     " ends at ", end, " after ", begin));
    }
    const std::string key = TokenLogKey(session, static_cast<uint32_t>(t));
    RSD_RETURN_IF_ERROR(FromRocksDb(
        batch.Put(tokens_, key,
                  cold_internal::EncodeTokenRecord(key, tokens.subspan(begin, end - begin))),
        "token log batch"));
    begin = end;
  }
  if (begin != static_cast<int64_t>(tokens.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("session ", session.ToHex(), ": the token log does not end at a turn end"));
  }
  if (batch.Count() == 0) return absl::OkStatus();
  rocksdb::WriteOptions wo;
  wo.sync = sync_;
  return FromRocksDb(db_->Write(wo, &batch),
                     absl::StrCat("write token log of session ", session.ToHex()));
}

absl::StatusOr<std::vector<TokenRecord>> ColdStore::ReadTokenLogByKeys(const SessionId& session) {
  std::vector<TokenRecord> out;
  for (uint32_t turn = 0;; ++turn) {
    const std::string key = TokenLogKey(session, turn);
    absl::StatusOr<std::string> value =
        Read(Table::kTokens, key, absl::StrCat("session ", session.ToHex(), " turn ", turn));
    if (absl::IsNotFound(value.status())) return out;
    if (!value.ok()) return value.status();
    RSD_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, DecodeTokenRecord(key, *value));
    out.push_back({turn, std::move(tokens)});
  }
}

absl::StatusOr<std::vector<TokenRecord>> ColdStore::ReadTokenLog(const SessionId& session) {
  const std::string lower(session.AsStringView());
  const std::string upper = SessionUpperBound(session);
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, tokens_));
  std::vector<TokenRecord> records;
  for (it->Seek(lower); it->Valid(); it->Next()) {
    std::string_view key(it->key().data(), it->key().size());
    const uint32_t want = static_cast<uint32_t>(records.size());
    if (key.size() != cold_internal::kTokenLogKeySize) {
      return absl::DataLossError(absl::StrCat("session ", session.ToHex(), ": token log key of ",
                                              key.size(), " bytes after turn ", want));
    }
    const uint32_t turn = cold_internal::TurnOfTokenLogKey(key);
    if (turn != want) {
      return absl::DataLossError(absl::StrCat("session ", session.ToHex(), ": token log turn ",
                                              want, " is missing (next stored turn is ", turn,
                                              ")"));
    }
    RSD_ASSIGN_OR_RETURN(
        std::vector<int32_t> tokens,
        DecodeTokenRecord(key, std::string_view(it->value().data(), it->value().size())));
    records.push_back(TokenRecord{turn, std::move(tokens)});
  }
  RSD_RETURN_IF_ERROR(
      FromRocksDb(it->status(), absl::StrCat("read token log of session ", session.ToHex())));
  return records;
}

absl::Status ColdStore::TruncateTokenLog(const SessionId& session, uint32_t keep_turns) {
  absl::MutexLock lock(&token_mu_);
  const std::string upper = SessionUpperBound(session);
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, tokens_));
  rocksdb::WriteBatch batch;
  for (it->Seek(TokenLogKey(session, keep_turns)); it->Valid(); it->Next()) {
    RSD_RETURN_IF_ERROR(FromRocksDb(batch.Delete(tokens_, it->key()), "truncate token log"));
  }
  RSD_RETURN_IF_ERROR(
      FromRocksDb(it->status(), absl::StrCat("truncate token log of session ", session.ToHex())));
  if (batch.Count() == 0) return absl::OkStatus();
  rocksdb::WriteOptions wo;
  wo.sync = sync_;
  return FromRocksDb(db_->Write(wo, &batch),
                     absl::StrCat("truncate token log of session ", session.ToHex(), " to ",
                                  keep_turns, " turns"));
}

}  // namespace rsd
