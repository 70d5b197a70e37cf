#include "router/audit_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace rsd::router {

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    const std::string msg =
        absl::StrCat("cannot open the audit log ", path, ": ", std::strerror(errno));
    return errno == EACCES ? absl::PermissionDeniedError(msg) : absl::FailedPreconditionError(msg);
  }
  return std::unique_ptr<AuditLog>(new AuditLog(path, fd));
}

AuditLog::~AuditLog() { ::close(fd_); }

absl::Status AuditLog::Record(const Principal& who, const std::string& action,
                              const std::string& target, const absl::Status& outcome) {
  nlohmann::ordered_json j;
  j["time"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  j["key"] = who.key_id.empty() ? "anonymous" : who.key_id;
  j["tenant"] = who.tenant;
  j["role"] = who.key_id.empty() ? "anonymous" : RoleName(who.role);
  j["action"] = action;
  j["target"] = target.substr(0, 256);
  j["code"] = absl::StatusCodeToString(outcome.code());
  j["message"] = std::string(outcome.message().substr(0, 512));
  const std::string line =
      j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  absl::MutexLock lock(&mu_);
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::InternalError(
          absl::StrCat("cannot write the audit log ", path_, ": ", std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  if (::fdatasync(fd_) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot sync the audit log ", path_, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace rsd::router
