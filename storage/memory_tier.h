// An unbounded tier in process memory (tests; a bottom tier that never drops anything).
#pragma once

#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "storage/common/status.h"
#include "storage/state_tier.h"

namespace rsd {

// Thread-safe (one mutex; Export's visitor runs with it held).
class MemoryTier final : public StateTier {
 public:
  explicit MemoryTier(const char* name = "memory") : name_(name) {}
  const char* name() const override { return name_; }
  absl::StatusOr<std::vector<Entry>> Offload(const BlockKey& key, std::string value) override {
    absl::MutexLock lock(&mu_);
    map_[key] = std::move(value);
    return std::vector<Entry>{};
  }
  absl::StatusOr<std::string> Onboard(const BlockKey& key) override {
    absl::MutexLock lock(&mu_);
    auto it = map_.find(key);
    if (it == map_.end())
      return absl::NotFoundError(absl::StrCat(name_, " holds no ", key.ToString()));
    return it->second;
  }
  absl::Status Evict(const BlockKey& key) override {
    absl::MutexLock lock(&mu_);
    map_.erase(key);
    return absl::OkStatus();
  }
  absl::Status EvictSession(const SessionId& session, uint32_t first_block = 0) override {
    absl::MutexLock lock(&mu_);
    for (auto it = map_.lower_bound(BlockKey{session, 0, 0});
         it != map_.end() && it->first.session == session;) {
      it = it->first.block >= first_block ? map_.erase(it) : std::next(it);
    }
    return absl::OkStatus();
  }
  absl::Status Export(const SessionId& session, BlockVisitor fn) override {
    absl::MutexLock lock(&mu_);
    for (auto it = map_.lower_bound(BlockKey{session, 0, 0});
         it != map_.end() && it->first.session == session; ++it) {
      RSD_RETURN_IF_ERROR(fn(it->first, it->second));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<bool> HoldsSession(const SessionId& session) override {
    absl::MutexLock lock(&mu_);
    auto it = map_.lower_bound(BlockKey{session, 0, 0});
    return it != map_.end() && it->first.session == session;
  }
  size_t bytes_used() const override {
    absl::MutexLock lock(&mu_);
    size_t n = 0;
    for (const auto& [k, v] : map_) n += v.size();
    return n;
  }
  absl::StatusOr<size_t> SessionBytes(const SessionId& session) override {
    size_t n = 0;
    RSD_RETURN_IF_ERROR(Export(session, [&](const BlockKey&, std::string_view v) {
      n += v.size();
      return absl::OkStatus();
    }));
    return n;
  }

 private:
  const char* name_;
  mutable absl::Mutex mu_;
  std::map<BlockKey, std::string> map_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rsd
