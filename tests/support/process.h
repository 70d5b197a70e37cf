// Real processes for multi-process tests: start a binary with arguments, its output to a log
// file, signal it, wait for it; free loopback ports.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace rsd::testing {

class Process {
 public:
  // Starts argv[0] (a path) with stdout and stderr appended to `log_path`.
  static absl::StatusOr<Process> Start(const std::vector<std::string>& argv,
                                       const std::string& log_path);
  Process() = default;
  Process(Process&& o) noexcept { *this = std::move(o); }
  Process& operator=(Process&& o) noexcept;
  ~Process();  // SIGKILL if still running

  pid_t pid() const { return pid_; }
  bool running();
  void Signal(int sig);
  // Waits up to `timeout_seconds`; the exit status (or 128 + signal), -1 on timeout.
  int Wait(double timeout_seconds);
  // SIGTERM, then SIGKILL after `grace_seconds`.
  int Stop(double grace_seconds = 5);
  // Resident set size in bytes (from /proc), 0 if unknown.
  int64_t RssBytes() const;
  const std::string& log_path() const { return log_; }
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  std::string log_;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreePort();

// Runs a command to completion: its stdout, or an error with its exit status and output.
absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv,
                                       double timeout_seconds = 300);

}  // namespace rsd::testing
