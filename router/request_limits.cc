#include "router/request_limits.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace rsd::router {
namespace {

absl::Status CheckBytes(const char* field, const std::string& value, size_t cap) {
  if (value.size() <= cap) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, " is ", value.size(), " bytes; at most ", cap, " are accepted"));
}

}  // namespace

absl::Status CheckCreateRequest(const Caller& caller, const v1::CreateSessionRequest& req) {
  if (absl::Status s = CheckBytes("the tenant", caller.tenant, kMaxTenantBytes); !s.ok()) return s;
  if (absl::Status s = CheckBytes("model", req.model(), kMaxModelNameBytes); !s.ok()) return s;
  const v1::SessionOptions& o = req.options();
  if (o.ttl_seconds() > kMaxTtlSeconds) {
    return absl::InvalidArgumentError(absl::StrCat("options.ttl_seconds ", o.ttl_seconds(),
                                                   " exceeds the server's cap of ", kMaxTtlSeconds,
                                                   " (30 days)"));
  }
  if (o.priority() < kMinPriority || o.priority() > kMaxPriority) {
    return absl::InvalidArgumentError(absl::StrCat("options.priority ", o.priority(),
                                                   " is outside the server's range [", kMinPriority,
                                                   ", ", kMaxPriority, "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckTurnRequest(const Caller& caller, const v1::TurnRequest& req) {
  if (absl::Status s = CheckBytes("the tenant", caller.tenant, kMaxTenantBytes); !s.ok()) return s;
  return CheckBytes("turn_id", req.turn_id(), kMaxTurnIdBytes);
}

}  // namespace rsd::router
