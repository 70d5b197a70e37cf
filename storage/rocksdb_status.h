// rocksdb::Status → absl::Status, with context. Internal to storage/.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "rocksdb/status.h"

namespace rsd {

// `what` names the operation and its object ("get block <key>"). Corruption → DATA_LOSS,
// NotFound → NOT_FOUND, disk full → RESOURCE_EXHAUSTED, other I/O → INTERNAL, Busy/TryAgain →
// UNAVAILABLE; the RocksDB message follows.
absl::Status FromRocksDb(const rocksdb::Status& s, const std::string& what);

}  // namespace rsd
