#include "storage/common/ids.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"

namespace rsd {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string Clip(std::string_view s) {
  constexpr size_t kMax = 64;
  if (s.size() <= kMax) return std::string(s);
  return absl::StrCat(std::string(s.substr(0, kMax)), "...");
}

}  // namespace

SessionId SessionId::Random() {
  std::array<uint8_t, kSize> bytes{};
  size_t got = 0;
  while (got < kSize) {
    ssize_t n = getrandom(bytes.data() + got, kSize - got, 0);
    if (n > 0) {
      got += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;  // no getrandom (ENOSYS) or an unexpected error: fall back below
    }
  }
  if (got < kSize) {
    std::random_device rd;
    for (size_t i = 0; i < kSize; i += 4) {
      uint32_t v = rd();
      for (size_t j = 0; j < 4; ++j) bytes[i + j] = static_cast<uint8_t>(v >> (8 * j));
    }
  }
  return SessionId(bytes);
}

SessionId SessionId::FromBytes(std::span<const uint8_t> bytes) {
  RSD_CHECK(bytes.size() >= kSize);
  std::array<uint8_t, kSize> a{};
  for (size_t i = 0; i < kSize; ++i) a[i] = bytes[i];
  return SessionId(a);
}

std::string SessionId::ToHex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * kSize, '0');
  for (size_t i = 0; i < kSize; ++i) {
    out[2 * i] = kDigits[bytes_[i] >> 4];
    out[2 * i + 1] = kDigits[bytes_[i] & 0xf];
  }
  return out;
}

absl::StatusOr<SessionId> ParseSessionId(std::string_view hex) {
  if (hex.size() != 2 * SessionId::kSize) {
    return absl::InvalidArgumentError(absl::StrCat("session id \"", Clip(hex), "\" has ",
                                                   hex.size(), " characters, want 32 hex digits"));
  }
  std::array<uint8_t, SessionId::kSize> bytes{};
  for (size_t i = 0; i < hex.size(); ++i) {
    int v = HexValue(hex[i]);
    if (v < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("session id \"", Clip(hex), "\" has a non-hex character at offset ", i));
    }
    bytes[i / 2] = static_cast<uint8_t>(bytes[i / 2] << 4 | v);
  }
  return SessionId(bytes);
}

uint64_t RandomSeed() {
  const SessionId r = SessionId::Random();
  uint64_t seed = 0;
  std::memcpy(&seed, r.bytes().data(), sizeof(seed));
  return seed;
}

}  // namespace rsd
