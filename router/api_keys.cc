#include "router/api_keys.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "rocksdb/db.h"
#include "storage/common/status.h"
#include "storage/rocksdb_status.h"

namespace rsd::router {
namespace {

using nlohmann::json;

constexpr size_t kIdHex = 16;
constexpr size_t kSecretHex = 64;
constexpr char kPrefix[] = "rsd_";
constexpr size_t kPrefixSize = 4;

std::string Sha256(std::string_view s) {
  unsigned char out[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), out);
  return std::string(reinterpret_cast<const char*>(out), sizeof(out));
}

absl::StatusOr<std::string> RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
    return absl::InternalError("no random bytes for an API key (OpenSSL RAND_bytes failed)");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// The id of a well-formed key, else "".
std::string IdOf(std::string_view key) {
  if (key.size() != kPrefixSize + kIdHex + 1 + kSecretHex ||
      !key.starts_with(std::string_view(kPrefix)))
    return "";
  const std::string_view id = key.substr(kPrefixSize, kIdHex);
  const std::string_view secret = key.substr(kPrefixSize + kIdHex + 1);
  if (key[kPrefixSize + kIdHex] != '_' || !IsLowerHex(id) || !IsLowerHex(secret)) return "";
  return std::string(id);
}

absl::Status Invalid() { return absl::UnauthenticatedError("invalid API key"); }

rocksdb::WriteOptions Synced() {
  rocksdb::WriteOptions w;
  w.sync = true;
  return w;
}

}  // namespace

const char* RoleName(Role r) {
  switch (r) {
    case Role::kTenant:
      return "tenant";
    case Role::kAdmin:
      return "admin";
    case Role::kWorker:
      return "worker";
  }
  return "?";
}

std::string EncodeKeyRecord(const KeyRecord& r) {
  json j = {{"id", r.id},
            {"sha256", json::binary(std::vector<uint8_t>(r.sha256.begin(), r.sha256.end()))},
            {"tenant", r.tenant},
            {"role", RoleName(r.role)},
            {"worker", r.worker},
            {"created", r.created_unix_ms},
            {"revoked", r.revoked_unix_ms}};
  if (r.expires_unix_ms != 0) j["expires"] = r.expires_unix_ms;
  const std::vector<uint8_t> out = json::to_cbor(j);
  return std::string(out.begin(), out.end());
}

absl::StatusOr<KeyRecord> DecodeKeyRecord(const std::string& bytes, const std::string& id) {
  try {
    const json j = json::from_cbor(bytes);
    KeyRecord r;
    r.id = j.at("id").get<std::string>();
    const auto& hash = j.at("sha256").get_binary();
    r.sha256.assign(hash.begin(), hash.end());
    r.tenant = j.at("tenant").get<std::string>();
    const std::string role = j.at("role").get<std::string>();
    if (role == "tenant") {
      r.role = Role::kTenant;
    } else if (role == "admin") {
      r.role = Role::kAdmin;
    } else if (role == "worker") {
      r.role = Role::kWorker;
    } else {
      return absl::DataLossError(absl::StrCat("API key ", id, ": unknown role"));
    }
    r.worker = j.at("worker").get<std::string>();
    r.created_unix_ms = j.at("created").get<int64_t>();
    r.revoked_unix_ms = j.at("revoked").get<int64_t>();
    if (j.contains("expires")) r.expires_unix_ms = j.at("expires").get<int64_t>();
    if (r.id != id || r.sha256.size() != SHA256_DIGEST_LENGTH) {
      return absl::DataLossError(absl::StrCat("API key ", id, ": record does not match its key"));
    }
    return r;
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("API key ", id, ": malformed record: ", e.what()));
  }
}

KeyStore::KeyStore(RocksDb* db) : db_(*db) {}

absl::StatusOr<KeyRecord> KeyStore::Get(const std::string& id) const {
  std::string value;
  const rocksdb::Status s = db_.db()->Get(rocksdb::ReadOptions(), db_.family(kFamily), id, &value);
  if (s.IsNotFound()) return absl::NotFoundError(absl::StrCat("unknown API key ", id));
  RSD_RETURN_IF_ERROR(FromRocksDb(s, absl::StrCat("read API key ", id)));
  return DecodeKeyRecord(value, id);
}

absl::Status KeyStore::Put(const KeyRecord& r) {
  return FromRocksDb(db_.db()->Put(Synced(), db_.family(kFamily), r.id, EncodeKeyRecord(r)),
                     absl::StrCat("write API key ", r.id));
}

absl::StatusOr<std::string> KeyStore::Create(const std::string& tenant, Role role,
                                             KeyRecord* record, absl::Duration ttl) {
  if (role != Role::kWorker && tenant.empty()) {
    return absl::InvalidArgumentError("an API key needs a tenant (--tenant T)");
  }
  if (ttl < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("an API key's time to live cannot be negative");
  }
  RSD_ASSIGN_OR_RETURN(const std::string id, RandomHex(kIdHex / 2));
  RSD_ASSIGN_OR_RETURN(const std::string secret, RandomHex(kSecretHex / 2));
  const std::string key = absl::StrCat(kPrefix, id, "_", secret);
  KeyRecord r;
  r.id = id;
  r.sha256 = Sha256(key);
  r.tenant = role == Role::kWorker ? "" : tenant;
  r.role = role;
  const absl::Time now = absl::Now();
  r.created_unix_ms = absl::ToUnixMillis(now);
  if (ttl > absl::ZeroDuration()) r.expires_unix_ms = absl::ToUnixMillis(now + ttl);
  absl::MutexLock lock(&write_mu_);
  RSD_RETURN_IF_ERROR(Put(r));
  if (record != nullptr) *record = r;
  return key;
}

absl::StatusOr<KeyRecord> KeyStore::Check(std::string_view key, absl::Time now) const {
  const std::string id = IdOf(key);
  if (id.empty()) return Invalid();
  absl::StatusOr<KeyRecord> r = Get(id);
  if (absl::IsNotFound(r.status())) return Invalid();
  if (!r.ok()) return r.status();
  const std::string hash = Sha256(key);
  if (CRYPTO_memcmp(hash.data(), r->sha256.data(), hash.size()) != 0) return Invalid();
  if (r->revoked_unix_ms != 0) {
    return absl::UnauthenticatedError(absl::StrCat("revoked API key ", id));
  }
  if (r->expires_unix_ms != 0 && absl::ToUnixMillis(now) >= r->expires_unix_ms) {
    return absl::UnauthenticatedError(absl::StrCat("expired API key ", id));
  }
  return r;
}

absl::StatusOr<std::vector<KeyRecord>> KeyStore::List() const {
  std::unique_ptr<rocksdb::Iterator> it(
      db_.db()->NewIterator(rocksdb::ReadOptions(), db_.family(kFamily)));
  std::vector<KeyRecord> out;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    RSD_ASSIGN_OR_RETURN(KeyRecord r,
                         DecodeKeyRecord(it->value().ToString(), it->key().ToString()));
    out.push_back(std::move(r));
  }
  RSD_RETURN_IF_ERROR(FromRocksDb(it->status(), "list API keys"));
  return out;
}

absl::StatusOr<KeyRecord> KeyStore::Revoke(const std::string& id) {
  absl::MutexLock lock(&write_mu_);
  RSD_ASSIGN_OR_RETURN(KeyRecord r, Get(id));
  if (r.revoked_unix_ms != 0) return r;
  r.revoked_unix_ms = absl::ToUnixMillis(absl::Now());
  RSD_RETURN_IF_ERROR(Put(r));
  return r;
}

absl::Status KeyStore::BindWorker(const std::string& id, const std::string& worker) {
  absl::MutexLock lock(&write_mu_);
  RSD_ASSIGN_OR_RETURN(KeyRecord r, Get(id));
  if (r.worker == worker) return absl::OkStatus();
  if (!r.worker.empty()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "API key ", id, " belongs to worker '", r.worker, "', not '", worker.substr(0, 128), "'"));
  }
  r.worker = worker;
  return Put(r);
}

absl::StatusOr<bool> KeyStore::HasAdminKey() const {
  RSD_ASSIGN_OR_RETURN(const std::vector<KeyRecord> all, List());
  for (const KeyRecord& r : all) {
    const bool expired =
        r.expires_unix_ms != 0 && absl::ToUnixMillis(absl::Now()) >= r.expires_unix_ms;
    if (r.role == Role::kAdmin && r.revoked_unix_ms == 0 && !expired) return true;
  }
  return false;
}

absl::StatusOr<Principal> Identify(const KeyStore* keys, std::string_view authorization,
                                   std::string_view tenant_header) {
  Principal p;
  if (keys == nullptr) {
    p.tenant = tenant_header.empty() ? "default" : std::string(tenant_header);
    return p;
  }
  constexpr std::string_view kBearer = "bearer ";
  if (authorization.size() <= kBearer.size() ||
      absl::AsciiStrToLower(std::string(authorization.substr(0, kBearer.size()))) != kBearer) {
    return absl::UnauthenticatedError(
        "missing API key: send the header 'authorization: Bearer <key>'");
  }
  RSD_ASSIGN_OR_RETURN(const KeyRecord r, keys->Check(authorization.substr(kBearer.size())));
  p.key_id = r.id;
  p.tenant = r.tenant;
  p.role = r.role;
  p.worker = r.worker;
  return p;
}

absl::Status Permit(const Principal& who, Access need) {
  const bool allowed = who.role == Role::kAdmin ||
                       (need == Access::kClient && who.role == Role::kTenant) ||
                       (need == Access::kRegistry && who.role == Role::kWorker);
  if (allowed) return absl::OkStatus();
  const char* what = need == Access::kAdmin    ? "the Admin service needs an admin key"
                     : need == Access::kClient ? "sessions need a tenant or admin key"
                                               : "registering a worker needs a worker key";
  return absl::PermissionDeniedError(
      absl::StrCat("API key ", who.key_id, " is a ", RoleName(who.role), " key: ", what));
}

absl::StatusOr<Principal> Authorize(const KeyStore* keys, std::string_view authorization,
                                    std::string_view tenant_header, Access need) {
  RSD_ASSIGN_OR_RETURN(Principal p, Identify(keys, authorization, tenant_header));
  RSD_RETURN_IF_ERROR(Permit(p, need));
  return p;
}

absl::StatusOr<std::string> EnsureAdminKey(KeyStore& keys, const std::string& path) {
  RSD_ASSIGN_OR_RETURN(const bool has_admin, keys.HasAdminKey());
  if (has_admin) return std::string();
  KeyRecord rec;
  RSD_ASSIGN_OR_RETURN(const std::string key, keys.Create("admin", Role::kAdmin, &rec));
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write the admin key to ", tmp, ": ", std::strerror(errno)));
  }
  const std::string line = key + "\n";
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
                       ::fchmod(fd, 0600) == 0 && ::fsync(fd) == 0;
  ::close(fd);
  if (!written || std::rename(tmp.c_str(), path.c_str()) != 0) {
    (void)keys.Revoke(rec.id);  // nobody can hold it
    return absl::InternalError(
        absl::StrCat("cannot write the admin key to ", path, ": ", std::strerror(errno)));
  }
  return rec.id;
}

}  // namespace rsd::router
