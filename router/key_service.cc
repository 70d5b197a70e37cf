// rsd.v1.Admin's API keys: create, list, revoke (api_keys.h), each authorized and audited like
// every Admin call.
#include "absl/strings/str_cat.h"
#include "router/request_limits.h"
#include "router/router_service.h"
#include "storage/common/status.h"

namespace rsd::router {
namespace {

v1::KeyInfo InfoOf(const KeyRecord& r) {
  v1::KeyInfo out;
  out.set_id(r.id);
  out.set_tenant(r.tenant);
  out.set_role(RoleName(r.role));
  out.set_worker(r.worker);
  out.set_created_unix_ms(r.created_unix_ms);
  out.set_revoked_unix_ms(r.revoked_unix_ms);
  out.set_expires_unix_ms(r.expires_unix_ms);
  return out;
}

absl::StatusOr<Role> RoleOf(const std::string& name) {
  if (name.empty() || name == "tenant") return Role::kTenant;
  if (name == "admin") return Role::kAdmin;
  if (name == "worker") return Role::kWorker;
  return absl::InvalidArgumentError(
      absl::StrCat("role '", name.substr(0, 32), "' is not tenant, admin or worker"));
}

}  // namespace

grpc::Status AdminService::CreateKey(grpc::ServerContext* ctx, const v1::CreateKeyRequest* req,
                                     v1::CreateKeyResponse* resp) {
  std::string target =
      absl::StrCat("role ", req->role().substr(0, 32), " tenant ", req->tenant().substr(0, 128));
  return Call(*ctx, "CreateKey", target, [&]() -> absl::Status {
    RSD_ASSIGN_OR_RETURN(const Role role, RoleOf(req->role()));
    if (req->tenant().size() > kMaxTenantBytes) {
      return absl::InvalidArgumentError(absl::StrCat("tenant is over ", kMaxTenantBytes, " bytes"));
    }
    // At most ten years: a key that outlives its holders is a liability.
    if (req->ttl_seconds() < 0 || req->ttl_seconds() > int64_t{10} * 365 * 86400) {
      return absl::InvalidArgumentError(absl::StrCat("ttl_seconds ", req->ttl_seconds(),
                                                     " is not between 0 (never) and ten years"));
    }
    KeyRecord rec;
    RSD_ASSIGN_OR_RETURN(
        *resp->mutable_key(),
        gate_.keys()->Create(req->tenant(), role, &rec, absl::Seconds(req->ttl_seconds())));
    *resp->mutable_info() = InfoOf(rec);
    target = absl::StrCat("key ", rec.id, " role ", RoleName(role), " tenant ", rec.tenant);
    return absl::OkStatus();
  });
}

grpc::Status AdminService::ListKeys(grpc::ServerContext* ctx, const v1::ListKeysRequest* req,
                                    v1::ListKeysResponse* resp) {
  return Call(*ctx, "ListKeys", "", [&]() -> absl::Status {
    RSD_ASSIGN_OR_RETURN(const std::vector<KeyRecord> keys, gate_.keys()->List());
    for (const KeyRecord& r : keys) *resp->add_keys() = InfoOf(r);
    return absl::OkStatus();
  });
}

grpc::Status AdminService::RevokeKey(grpc::ServerContext* ctx, const v1::RevokeKeyRequest* req,
                                     v1::KeyInfo* resp) {
  return Call(*ctx, "RevokeKey", absl::StrCat("key ", req->id().substr(0, 64)),
              [&]() -> absl::Status {
                RSD_ASSIGN_OR_RETURN(const KeyRecord r, gate_.keys()->Revoke(req->id()));
                *resp = InfoOf(r);
                return absl::OkStatus();
              });
}

}  // namespace rsd::router
