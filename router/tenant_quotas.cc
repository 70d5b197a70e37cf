#include "router/tenant_quotas.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace rsd::router {

TenantQuotas::Turn& TenantQuotas::Turn::operator=(Turn&& other) noexcept {
  if (this != &other) {
    if (quotas_ != nullptr) quotas_->EndTurn(tenant_);
    quotas_ = std::exchange(other.quotas_, nullptr);
    tenant_ = std::move(other.tenant_);
  }
  return *this;
}

TenantQuotas::Turn::~Turn() {
  if (quotas_ != nullptr) quotas_->EndTurn(tenant_);
}

void TenantQuotas::AddExisting(const std::string& tenant) {
  absl::MutexLock lock(&mu_);
  ++counts_[tenant].sessions;
}

absl::Status TenantQuotas::ReserveSession(const std::string& tenant) {
  absl::MutexLock lock(&mu_);
  Counts& c = counts_[tenant];
  if (options_.sessions > 0 && c.sessions >= options_.sessions) {
    return absl::ResourceExhaustedError(absl::StrCat("tenant '", tenant, "' holds ", c.sessions,
                                                     " sessions, its quota "
                                                     "(--max-sessions-per-tenant ",
                                                     options_.sessions, "); close some first"));
  }
  ++c.sessions;
  return absl::OkStatus();
}

void TenantQuotas::ReleaseSession(const std::string& tenant) {
  absl::MutexLock lock(&mu_);
  auto it = counts_.find(tenant);
  if (it == counts_.end() || it->second.sessions == 0) return;
  --it->second.sessions;
  if (it->second.sessions == 0 && it->second.turns == 0) counts_.erase(it);
}

absl::StatusOr<TenantQuotas::Turn> TenantQuotas::StartTurn(const std::string& tenant) {
  absl::MutexLock lock(&mu_);
  Counts& c = counts_[tenant];
  if (options_.turns > 0 && c.turns >= options_.turns) {
    return absl::ResourceExhaustedError(absl::StrCat("tenant '", tenant, "' has ", c.turns,
                                                     " turns running, its quota "
                                                     "(--max-turns-per-tenant ",
                                                     options_.turns, "); retry when one ends"));
  }
  ++c.turns;
  return Turn(this, tenant);
}

void TenantQuotas::EndTurn(const std::string& tenant) {
  absl::MutexLock lock(&mu_);
  auto it = counts_.find(tenant);
  if (it == counts_.end() || it->second.turns == 0) return;
  --it->second.turns;
  if (it->second.sessions == 0 && it->second.turns == 0) counts_.erase(it);
}

int64_t TenantQuotas::sessions(const std::string& tenant) {
  absl::MutexLock lock(&mu_);
  auto it = counts_.find(tenant);
  return it == counts_.end() ? 0 : it->second.sessions;
}

int64_t TenantQuotas::turns(const std::string& tenant) {
  absl::MutexLock lock(&mu_);
  auto it = counts_.find(tenant);
  return it == counts_.end() ? 0 : it->second.turns;
}

}  // namespace rsd::router
