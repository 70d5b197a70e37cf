// Identifiers shared by every component.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace rsd {

// A session's id: 128 random bits (DESIGN.md section 5), never derived from a counter or the
// router. A value type; the default value is the all-zero "nil" id, which Random() never returns
// (with overwhelming probability) and which no caller should hand out. Ordering is bytewise, the
// same order as the big-endian key prefix storage/ writes, so a sorted list of ids matches the
// order of their state on disk. Thread-compatible (immutable once built).
class SessionId {
 public:
  static constexpr size_t kSize = 16;

  constexpr SessionId() = default;
  explicit constexpr SessionId(const std::array<uint8_t, kSize>& bytes) : bytes_(bytes) {}

  // 16 bytes from the kernel's CSPRNG (getrandom), falling back to std::random_device. Never
  // fails; blocks only if the kernel's entropy pool is not yet initialized (early boot).
  static SessionId Random();
  // The first 16 bytes of `bytes` (RSD_CHECKs that there are at least 16).
  static SessionId FromBytes(std::span<const uint8_t> bytes);

  const std::array<uint8_t, kSize>& bytes() const { return bytes_; }
  std::string_view AsStringView() const {
    return {reinterpret_cast<const char*>(bytes_.data()), kSize};
  }
  bool IsNil() const { return *this == SessionId(); }

  // 32 lowercase hex digits, most significant byte first.
  std::string ToHex() const;

  friend constexpr auto operator<=>(const SessionId&, const SessionId&) = default;
  friend constexpr bool operator==(const SessionId&, const SessionId&) = default;

  template <typename H>
  friend H AbslHashValue(H h, const SessionId& id) {
    return H::combine(std::move(h), id.bytes_);
  }
  friend std::ostream& operator<<(std::ostream& os, const SessionId& id) {
    return os << id.ToHex();
  }

 private:
  std::array<uint8_t, kSize> bytes_{};
};

// Exactly 32 hex digits (either case) → the id; anything else → INVALID_ARGUMENT quoting the text
// (clipped) and what is wrong with it.
absl::StatusOr<SessionId> ParseSessionId(std::string_view hex);

// 64 random bits from the same source as SessionId::Random: a sampling seed for a request that
// named none.
uint64_t RandomSeed();

}  // namespace rsd
