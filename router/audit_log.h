// The router's audit log (issue #13): one JSON object per line, appended and fsynced before the
// call answers, for every Admin RPC (reads included), every key change and every refused attempt
// at either: when, who (key id, tenant, role; "anonymous" with auth off), what (the RPC and its
// target) and the outcome (status code and message). Secrets never reach it (a created key is
// named by its id).
//
// Thread-safe: lines from concurrent calls never interleave.
#pragma once

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "router/api_keys.h"

namespace rsd::router {

class AuditLog {
 public:
  // Opens `path` for appending (created 0600 if missing). PERMISSION_DENIED / FAILED_PRECONDITION
  // naming the path if it cannot be opened.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(const std::string& path);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Appends one line and syncs it. An I/O error is returned (and the caller's call fails with
  // it: an admin action that cannot be audited does not pass silently).
  absl::Status Record(const Principal& who, const std::string& action, const std::string& target,
                      const absl::Status& outcome);

  const std::string& path() const { return path_; }

 private:
  AuditLog(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rsd::router
