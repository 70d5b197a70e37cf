// What a backend has allocated, against an optional limit (a --device-memory cap). One per
// backend; not thread-safe (the compute thread owns the backend).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace rsd {

class MemoryLedger {
 public:
  explicit MemoryLedger(size_t limit) : limit_(limit) {}

  // OK if `bytes` more fit under the limit, else RESOURCE_EXHAUSTED naming `what`.
  absl::Status Admit(size_t bytes, std::string_view what, std::string_view device) const {
    if (limit_ != 0 && bytes > limit_ - std::min(limit_, used_)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "out of ", std::string(device), " memory allocating ", std::string(what), " (", bytes,
          " bytes): ", used_, " of the ", limit_, " bytes this backend may use are taken"));
    }
    return absl::OkStatus();
  }
  void Add(const void* p, size_t bytes) {
    sizes_[p] = bytes;
    used_ += bytes;
  }
  // The bytes `p` held (0 if it was not ours).
  size_t Remove(const void* p) {
    auto it = sizes_.find(p);
    if (it == sizes_.end()) return 0;
    const size_t n = it->second;
    used_ -= n;
    sizes_.erase(it);
    return n;
  }
  size_t used() const { return used_; }
  size_t limit() const { return limit_; }

 private:
  size_t limit_;
  size_t used_ = 0;
  std::unordered_map<const void*, size_t> sizes_;
};

}  // namespace rsd
