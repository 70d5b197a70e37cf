// Tests of storage faults (issue #14): the table files of one column family of a closed RocksDB
// database, and a byte flipped in one of them, as a failing disk or a stray write would.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace rsd::testing {

// The .sst files in `dir` whose table properties name column family `family`, oldest first (by
// file number). The database must be closed.
absl::StatusOr<std::vector<std::string>> SstFilesOfFamily(const std::string& dir,
                                                          const std::string& family);

// XORs the byte at `offset` of `path` with 0xff.
absl::Status FlipByte(const std::string& path, int64_t offset);

}  // namespace rsd::testing
