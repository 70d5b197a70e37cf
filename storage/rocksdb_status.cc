#include "storage/rocksdb_status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace rsd {

absl::Status FromRocksDb(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(what, ": rocksdb: ", s.ToString());
  switch (s.code()) {
    case rocksdb::Status::kOk:
      return absl::OkStatus();
    case rocksdb::Status::kNotFound:
      return absl::NotFoundError(msg);
    case rocksdb::Status::kCorruption:
      return absl::DataLossError(msg);
    case rocksdb::Status::kNotSupported:
      return absl::UnimplementedError(msg);
    case rocksdb::Status::kInvalidArgument:
      return absl::InvalidArgumentError(msg);
    case rocksdb::Status::kIOError:
      if (s.subcode() == rocksdb::Status::kNoSpace) return absl::ResourceExhaustedError(msg);
      return absl::InternalError(msg);
    case rocksdb::Status::kBusy:
    case rocksdb::Status::kTryAgain:
    case rocksdb::Status::kIncomplete:
    case rocksdb::Status::kShutdownInProgress:
      return absl::UnavailableError(msg);
    case rocksdb::Status::kTimedOut:
      return absl::DeadlineExceededError(msg);
    case rocksdb::Status::kAborted:
      return absl::AbortedError(msg);
    case rocksdb::Status::kExpired:
    case rocksdb::Status::kCompactionTooLarge:
    case rocksdb::Status::kMergeInProgress:
    case rocksdb::Status::kColumnFamilyDropped:
    case rocksdb::Status::kMaxCode:
      return absl::InternalError(msg);
  }
  return absl::InternalError(msg);
}

}  // namespace rsd
