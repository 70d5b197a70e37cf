// Pieces of ColdStore shared by its .cc files: key and token-record formats.
// Internal to storage/ (tests may use them).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rocksdb/status.h"
#include "storage/common/ids.h"

namespace rsd::cold_internal {

// An exclusive upper bound above every key of `session` in every column family: the session's
// 16 bytes followed by nine 0xff bytes (keys are at most 16 + 8 bytes).
std::string SessionUpperBound(const SessionId& session);

// session(16) | turn(4, big-endian).
std::string TokenLogKey(const SessionId& session, uint32_t turn);
inline constexpr size_t kTokenLogKeySize = SessionId::kSize + 4;
uint32_t TurnOfTokenLogKey(std::string_view key);  // key must be kTokenLogKeySize bytes

// u32 n | n x i32 | u64 XXH3-64 of (key | preceding bytes); integers little-endian.
std::string EncodeTokenRecord(std::string_view key, std::span<const int32_t> tokens);
// DATA_LOSS naming the session and turn if the record is malformed or fails its checksum.
absl::StatusOr<std::vector<int32_t>> DecodeTokenRecord(std::string_view key,
                                                       std::string_view value);

}  // namespace rsd::cold_internal
