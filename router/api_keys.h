// API keys (issue #13): who a caller is when the router runs with --auth.
//
// A key is "rsd_" + a 16-hex-digit id + "_" + 64 hex digits of secret (32 bytes from the kernel's
// random source). The router stores only the key's SHA-256 with its id, tenant and role, in the
// journal's RocksDB ("keys" family, key = id, synced writes): the key itself is printed once, at
// creation, and is never stored or logged. Checking a key reads its record by id and compares the
// hash in constant time; a revoked record is kept (listings show it) and refuses the key.
//
// Roles: a tenant key acts as its tenant on the Client service and the HTTP API; an admin key also
// reaches the Admin service (every tenant); a worker key only registers and heartbeats, and is
// bound to the first worker id that registers with it (another id is refused from then on).
//
// Thread-safe: every method may be called concurrently; writes are serialized.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "storage/rocks_db.h"

namespace rsd::router {

enum class Role { kTenant, kAdmin, kWorker };
// "tenant", "admin", "worker".
const char* RoleName(Role r);

struct KeyRecord {
  std::string id;      // 16 hex digits, public (listings, audit lines)
  std::string sha256;  // of the whole key, 32 bytes
  std::string tenant;  // tenant and admin keys
  Role role = Role::kTenant;
  std::string worker;  // worker keys: the worker id bound on first registration ("" until then)
  int64_t created_unix_ms = 0;
  int64_t revoked_unix_ms = 0;  // 0: in force
  int64_t expires_unix_ms = 0;  // 0: never
  friend bool operator==(const KeyRecord&, const KeyRecord&) = default;
};

// Who a checked call comes from. With auth off: the tenant the caller named, role admin, no id.
struct Principal {
  std::string key_id;
  std::string tenant;
  Role role = Role::kAdmin;
  std::string worker;  // worker keys: the bound id
};

// What a call needs.
enum class Access {
  kClient,    // Client service, HTTP API: tenant or admin keys
  kAdmin,     // Admin service: admin keys
  kRegistry,  // Registry service: worker or admin keys
};

class KeyStore {
 public:
  // `db` (the router journal's database, with a "keys" family) must outlive the store.
  explicit KeyStore(RocksDb* db);

  // A new key for `tenant` (non-empty unless `role` is kWorker) in `role`, expiring `ttl` after
  // now (zero: never; INVALID_ARGUMENT if negative); returns the key (the only time it exists
  // outside the caller) and fills `record` if non-null.
  absl::StatusOr<std::string> Create(const std::string& tenant, Role role, KeyRecord* record,
                                     absl::Duration ttl = absl::ZeroDuration());
  // The record of the presented key at `now`. UNAUTHENTICATED "invalid API key" for a malformed,
  // unknown or wrong key, "revoked API key <id>" for a revoked one, "expired API key <id>" for
  // one past its expiry.
  absl::StatusOr<KeyRecord> Check(std::string_view key, absl::Time now = absl::Now()) const;
  // Every key's record (id order), revoked ones included.
  absl::StatusOr<std::vector<KeyRecord>> List() const;
  // Revokes key `id` (kept, marked). NOT_FOUND "unknown API key <id>"; revoking twice is OK.
  absl::StatusOr<KeyRecord> Revoke(const std::string& id);
  // Binds worker key `id` to `worker` if it is unbound. PERMISSION_DENIED naming both ids if it
  // is bound to another worker.
  absl::Status BindWorker(const std::string& id, const std::string& worker);
  // Whether any admin key is in force, neither revoked nor expired (the router's first start
  // writes one when there is none).
  absl::StatusOr<bool> HasAdminKey() const;

  static constexpr char kFamily[] = "keys";

 private:
  absl::StatusOr<KeyRecord> Get(const std::string& id) const;
  absl::Status Put(const KeyRecord& r);

  RocksDb& db_;
  absl::Mutex write_mu_;
};

// Who the call is. `keys` null: auth off, everyone is an admin of the tenant in `tenant_header`
// ("default" if empty). With keys: `authorization` must be "Bearer <key>" (UNAUTHENTICATED
// "missing API key ..." without it, the key's refusal otherwise); the tenant is the key's and
// `tenant_header` is ignored.
absl::StatusOr<Principal> Identify(const KeyStore* keys, std::string_view authorization,
                                   std::string_view tenant_header);
// Whether `who` may make a call that needs `need`: PERMISSION_DENIED naming the key, its role and
// what the call needs otherwise.
absl::Status Permit(const Principal& who, Access need);
// Identify, then Permit.
absl::StatusOr<Principal> Authorize(const KeyStore* keys, std::string_view authorization,
                                    std::string_view tenant_header, Access need);

// The router's first start with --auth: unless an admin key is in force, creates one (tenant
// "admin") and writes it to `path` (mode 0600, replaced atomically; nothing else keeps it).
// Returns the new key's id, or "" if an admin key was already in force.
absl::StatusOr<std::string> EnsureAdminKey(KeyStore& keys, const std::string& path);

// Codec of the stored record (CBOR). DATA_LOSS naming the key id if malformed.
std::string EncodeKeyRecord(const KeyRecord& r);
absl::StatusOr<KeyRecord> DecodeKeyRecord(const std::string& bytes, const std::string& id);

}  // namespace rsd::router
