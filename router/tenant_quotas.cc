#include "router/tenant_quotas.h"

#include <algorithm>
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

void TenantQuotas::AddExisting(const std::string& tenant, bool pinned, int64_t history_tokens) {
  absl::MutexLock lock(&mu_);
  Counts& c = counts_[tenant];
  ++c.sessions;
  if (pinned) ++c.pinned;
  c.history_tokens += std::max<int64_t>(0, history_tokens);
}

absl::Status TenantQuotas::ReserveSession(const std::string& tenant, bool pinned) {
  absl::MutexLock lock(&mu_);
  Counts& c = counts_[tenant];
  if (options_.sessions > 0 && c.sessions >= options_.sessions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("tenant '", tenant, "' holds ", c.sessions,
                     " sessions, its quota (--max-sessions-per-tenant ", options_.sessions,
                     "); close some first"));
  }
  if (pinned && options_.pinned > 0 && c.pinned >= options_.pinned) {
    return absl::ResourceExhaustedError(
        absl::StrCat("tenant '", tenant, "' holds ", c.pinned,
                     " pinned sessions, its quota (--max-pinned-per-tenant ", options_.pinned,
                     "); create it unpinned or close one"));
  }
  ++c.sessions;
  if (pinned) ++c.pinned;
  return absl::OkStatus();
}

void TenantQuotas::ReleaseSession(const std::string& tenant, bool pinned, int64_t history_tokens) {
  absl::MutexLock lock(&mu_);
  auto it = counts_.find(tenant);
  if (it == counts_.end() || it->second.sessions == 0) return;
  --it->second.sessions;
  if (pinned && it->second.pinned > 0) --it->second.pinned;
  it->second.history_tokens = std::max<int64_t>(0, it->second.history_tokens - history_tokens);
  if (it->second.sessions == 0 && it->second.turns == 0) counts_.erase(it);
}

void TenantQuotas::AddHistory(const std::string& tenant, int64_t delta) {
  absl::MutexLock lock(&mu_);
  auto it = counts_.find(tenant);
  if (it == counts_.end()) return;
  it->second.history_tokens = std::max<int64_t>(0, it->second.history_tokens + delta);
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
  if (options_.history_tokens > 0 && c.history_tokens >= options_.history_tokens) {
    return absl::ResourceExhaustedError(
        absl::StrCat("tenant '", tenant, "' holds ", c.history_tokens,
                     " tokens of session history, its quota (--max-history-tokens-per-tenant ",
                     options_.history_tokens, "); close sessions or undo turns to free some"));
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

int64_t TenantQuotas::pinned(const std::string& tenant) {
  absl::MutexLock lock(&mu_);
  auto it = counts_.find(tenant);
  return it == counts_.end() ? 0 : it->second.pinned;
}

int64_t TenantQuotas::history_tokens(const std::string& tenant) {
  absl::MutexLock lock(&mu_);
  auto it = counts_.find(tenant);
  return it == counts_.end() ? 0 : it->second.history_tokens;
}

int64_t TenantQuotas::turns(const std::string& tenant) {
  absl::MutexLock lock(&mu_);
  auto it = counts_.find(tenant);
  return it == counts_.end() ? 0 : it->second.turns;
}

}  // namespace rsd::router
