#include "storage/cold_store_internal.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "storage/common/hash.h"
#include "storage/rocksdb_status.h"

namespace rsd::cold_internal {
namespace {

std::string Errno(int err) { return std::strerror(err); }

absl::Status ErrnoStatus(int err, const std::string& what) {
  std::string msg = absl::StrCat(what, ": ", Errno(err));
  if (err == EACCES || err == EPERM || err == EROFS) return absl::PermissionDeniedError(msg);
  if (err == ENOENT || err == ENOTDIR) return absl::FailedPreconditionError(msg);
  return absl::InternalError(msg);
}

// 0: missing; 1: directory; 2: something else; <0: -errno.
int Kind(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return errno == ENOENT ? 0 : -errno;
  return S_ISDIR(st.st_mode) ? 1 : 2;
}

absl::Status CheckAccess(const std::string& dir) {
  if (access(dir.c_str(), R_OK | W_OK | X_OK) != 0) {
    return ErrnoStatus(errno,
                       absl::StrCat("cold store data dir ", dir, " is not readable and writable"));
  }
  return absl::OkStatus();
}

void Put32BigEndian(uint32_t v, std::string& out) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (24 - 8 * i)));
}

}  // namespace

absl::Status PrepareDataDir(const std::string& dir_in) {
  if (dir_in.empty()) return absl::InvalidArgumentError("cold store data dir is empty");
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  int kind = Kind(dir);
  if (kind < 0) return ErrnoStatus(-kind, absl::StrCat("cold store data dir ", dir));
  if (kind == 1) return CheckAccess(dir);
  if (kind == 2) {
    return absl::FailedPreconditionError(
        absl::StrCat("cold store data dir ", dir, " exists and is not a directory"));
  }
  const std::filesystem::path parent_path = std::filesystem::path(dir).parent_path();
  const std::string parent = parent_path.empty() ? std::string(".") : parent_path.string();
  int parent_kind = Kind(parent);
  if (parent_kind < 0) {
    return ErrnoStatus(-parent_kind, absl::StrCat("parent ", parent, " of cold store data dir"));
  }
  if (parent_kind != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("cold store data dir ", dir, ": parent ", parent,
                     parent_kind == 0 ? " does not exist (only the last component is created)"
                                      : " is not a directory"));
  }
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoStatus(errno, absl::StrCat("cannot create cold store data dir ", dir));
  }
  return CheckAccess(dir);
}

absl::Status OpenError(const rocksdb::Status& s, const std::string& dir) {
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cold store ", dir, " is already open (in this or another process): ", s.ToString()));
  }
  return FromRocksDb(s, absl::StrCat("open cold store ", dir));
}

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
