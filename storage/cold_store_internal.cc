#include "storage/cold_store_internal.h"

#include "absl/strings/str_cat.h"
#include "storage/common/hash.h"

namespace rsd::cold_internal {
namespace {

void Put32BigEndian(uint32_t v, std::string& out) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (24 - 8 * i)));
}

}  // namespace

std::string SessionUpperBound(const SessionId& session) {
  std::string out(session.AsStringView());
  out.append(9, '\xff');
  return out;
}

std::string TokenLogKey(const SessionId& session, uint32_t turn) {
  std::string out(session.AsStringView());
  Put32BigEndian(turn, out);
  return out;
}

uint32_t TurnOfTokenLogKey(std::string_view key) {
  uint32_t v = 0;
  for (size_t i = SessionId::kSize; i < kTokenLogKeySize; ++i) {
    v = v << 8 | static_cast<uint8_t>(key[i]);
  }
  return v;
}

std::string EncodeTokenRecord(std::string_view key, std::span<const int32_t> tokens) {
  std::string out;
  out.reserve(key.size() + 4 + 4 * tokens.size() + 8);
  out.append(key);  // hashed with the body, then cut off
  auto put = [&out](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
  };
  put(tokens.size(), 4);
  for (int32_t t : tokens) put(static_cast<uint32_t>(t), 4);
  put(Hash64(out.data(), out.size()), 8);
  return out.substr(key.size());
}

absl::StatusOr<std::vector<int32_t>> DecodeTokenRecord(std::string_view key,
                                                       std::string_view value) {
  auto get = [](const char* p, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(p[i]);
    return v;
  };
  std::string where = "token log record";
  if (key.size() == kTokenLogKeySize) {
    SessionId session =
        SessionId::FromBytes({reinterpret_cast<const uint8_t*>(key.data()), SessionId::kSize});
    where = absl::StrCat("session ", session.ToHex(), " turn ", TurnOfTokenLogKey(key));
  }
  if (key.size() != kTokenLogKeySize || value.size() < 12) {
    return absl::DataLossError(absl::StrCat(where, ": malformed record (key ", key.size(),
                                            " bytes, value ", value.size(), " bytes)"));
  }
  const uint64_t n = get(value.data(), 4);
  if (value.size() != 12 + 4 * n) {
    return absl::DataLossError(
        absl::StrCat(where, ": record of ", value.size(), " bytes claims ", n, " tokens"));
  }
  std::string hashed;
  hashed.reserve(key.size() + value.size() - 8);
  hashed.append(key);
  hashed.append(value.substr(0, value.size() - 8));
  const uint64_t want = get(value.data() + value.size() - 8, 8);
  const uint64_t got = Hash64(hashed.data(), hashed.size());
  if (want != got) {
    return absl::DataLossError(absl::StrCat(where, ": checksum mismatch (stored ", Hex64(want),
                                            ", computed ", Hex64(got), ")"));
  }
  std::vector<int32_t> tokens(n);
  for (uint64_t i = 0; i < n; ++i) {
    tokens[i] = static_cast<int32_t>(static_cast<uint32_t>(get(value.data() + 4 + 4 * i, 4)));
  }
  return tokens;
}

}  // namespace rsd::cold_internal
