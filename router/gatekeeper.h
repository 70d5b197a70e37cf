// Who may call what on the router (issue #13), for the gRPC services and the HTTP API alike:
// API keys (api_keys.h) when the router runs with --auth, the audit log (audit_log.h) always.
// Without keys every caller is an admin of the tenant it names (x-rsd-tenant), as before auth.
//
// Thread-safe: every method may be called concurrently.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "router/api_keys.h"
#include "router/audit_log.h"

namespace rsd::router {

class Gatekeeper {
 public:
  // `keys` holds the API keys (managed through the Admin service either way); `auth` turns their
  // checking on. `audit` null records nothing. Both must outlive the gatekeeper.
  // `worker_certs` (mutual TLS): a worker must present a verified certificate naming its id.
  Gatekeeper(KeyStore* keys, bool auth, AuditLog* audit, bool worker_certs = false)
      : keys_(keys), check_(auth ? keys : nullptr), audit_(audit), worker_certs_(worker_certs) {}

  bool auth() const { return check_ != nullptr; }
  KeyStore* keys() const { return keys_; }

  // A Client-service or HTTP call: the caller's principal (its tenant is the session owner).
  absl::StatusOr<Principal> Client(std::string_view authorization,
                                   std::string_view tenant_header) const;
  // A Registry call from worker `worker` whose verified client certificate carries `peer_names`
  // (tls.h PeerNames): with worker_certs, one of them must be the id (PERMISSION_DENIED naming
  // the id otherwise). A worker key is bound to the first id it registers and refused for any
  // other (PERMISSION_DENIED naming both).
  absl::StatusOr<Principal> Registry(std::string_view authorization, const std::string& worker,
                                     const std::vector<std::string>& peer_names) const;
  // An Admin call `action` on `target`: identifies and permits the caller, runs `body` with its
  // principal, and records the attempt and its outcome in the audit log before answering (a
  // record that cannot be written fails the call with that error). `target` is read after `body`
  // runs, so a body may name what it created. Returns body's status, or the refusal.
  absl::Status Admin(std::string_view authorization, std::string_view tenant_header,
                     const std::string& action, const std::string& target,
                     const std::function<absl::Status(const Principal&)>& body) const;

 private:
  KeyStore* const keys_;
  const KeyStore* const check_;  // keys_ with auth on, else null
  AuditLog* const audit_;
  const bool worker_certs_;
};

}  // namespace rsd::router
