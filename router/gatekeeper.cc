#include "router/gatekeeper.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "storage/common/status.h"

namespace rsd::router {

absl::StatusOr<Principal> Gatekeeper::Client(std::string_view authorization,
                                             std::string_view tenant_header) const {
  return Authorize(check_, authorization, tenant_header, Access::kClient);
}

absl::StatusOr<Principal> Gatekeeper::Registry(std::string_view authorization,
                                               const std::string& worker,
                                               const std::vector<std::string>& peer_names) const {
  if (worker_certs_ &&
      std::find(peer_names.begin(), peer_names.end(), worker) == peer_names.end()) {
    return absl::PermissionDeniedError(
        absl::StrCat("worker '", worker.substr(0, 128), "' must present a certificate naming it (",
                     peer_names.empty() ? std::string("none was presented")
                                        : "it names " + absl::StrJoin(peer_names, ", "),
                     ")"));
  }
  RSD_ASSIGN_OR_RETURN(Principal p, Authorize(check_, authorization, "", Access::kRegistry));
  if (check_ != nullptr && p.role == Role::kWorker) {
    // The key's record, just read to check it, names the bound worker: a heartbeat of the bound
    // worker needs no second read; an unbound key is bound (or refused) under the store's lock.
    if (p.worker != worker) RSD_RETURN_IF_ERROR(keys_->BindWorker(p.key_id, worker));
    p.worker = worker;
  }
  return p;
}

absl::Status Gatekeeper::Admin(std::string_view authorization, std::string_view tenant_header,
                               const std::string& action, const std::string& target,
                               const std::function<absl::Status(const Principal&)>& body) const {
  absl::StatusOr<Principal> who = Identify(check_, authorization, tenant_header);
  Principal seen;  // unidentified: recorded as anonymous
  absl::Status outcome = who.status();
  if (who.ok()) {
    seen = *who;
    outcome = Permit(seen, Access::kAdmin);
    if (outcome.ok()) outcome = body(seen);
  }
  if (audit_ != nullptr) RSD_RETURN_IF_ERROR(audit_->Record(seen, action, target, outcome));
  return outcome;
}

}  // namespace rsd::router
