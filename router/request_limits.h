// Bounds on what a caller controls that the router stores, forwards or echoes (issue #13): a
// string past its cap is refused before it reaches the journal, a worker or an error message, and
// session options past the server's caps are refused rather than trusted. Errors name the field
// and the bound, never the oversized value.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "router/router_core.h"
#include "rsd/v1/client.pb.h"
#include "rsd/v1/common.pb.h"

namespace rsd::router {

inline constexpr size_t kMaxTenantBytes = 128;
inline constexpr size_t kMaxModelNameBytes = 256;
inline constexpr size_t kMaxTurnIdBytes = 128;
inline constexpr uint32_t kMaxTtlSeconds = 30 * 24 * 3600;  // 30 days
inline constexpr int32_t kMinPriority = -100;
inline constexpr int32_t kMaxPriority = 100;

// The caller's tenant, model name and session options.
absl::Status CheckCreateRequest(const Caller& caller, const v1::CreateSessionRequest& req);
// The caller's tenant and the turn id.
absl::Status CheckTurnRequest(const Caller& caller, const v1::TurnRequest& req);

}  // namespace rsd::router
