#include "storage/testing/faulty_tier.h"

namespace rsd::testing {

void FaultyTier::CorruptOnOnboard(const BlockKey& key) {
  absl::MutexLock lock(&mu_);
  corrupt_.insert(key);
}

void FaultyTier::FailOnboard(std::optional<BlockKey> key, absl::Status status) {
  absl::MutexLock lock(&mu_);
  if (key) {
    fail_key_[*key] = status;
  } else {
    fail_all_onboards_ = status;
  }
}

void FaultyTier::FailOffloads(absl::Status status) {
  absl::MutexLock lock(&mu_);
  fail_offloads_ = status;
}

int FaultyTier::onboards() const {
  absl::MutexLock lock(&mu_);
  return onboards_;
}

int FaultyTier::faults() const {
  absl::MutexLock lock(&mu_);
  return faults_;
}

absl::StatusOr<std::vector<StateTier::Entry>> FaultyTier::Offload(const BlockKey& key,
                                                                  std::string value) {
  {
    absl::MutexLock lock(&mu_);
    if (!fail_offloads_.ok()) {
      ++faults_;
      return fail_offloads_;
    }
  }
  return inner_->Offload(key, std::move(value));
}

absl::StatusOr<std::string> FaultyTier::Onboard(const BlockKey& key) {
  bool corrupt = false;
  {
    absl::MutexLock lock(&mu_);
    ++onboards_;
    if (!fail_all_onboards_.ok()) {
      ++faults_;
      return fail_all_onboards_;
    }
    if (auto it = fail_key_.find(key); it != fail_key_.end()) {
      ++faults_;
      return it->second;
    }
    corrupt = corrupt_.count(key) > 0;
  }
  absl::StatusOr<std::string> v = inner_->Onboard(key);
  if (v.ok() && corrupt && !v->empty()) {
    (*v)[v->size() / 2] ^= 0x04;
    absl::MutexLock lock(&mu_);
    ++faults_;
  }
  return v;
}

}  // namespace rsd::testing
