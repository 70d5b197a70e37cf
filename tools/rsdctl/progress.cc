#include "tools/rsdctl/progress.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/rsdctl/commands.h"

namespace rsd::ctl {
namespace {

std::string Line(const std::string& what, const MoveSample& start, const MoveSample& now,
                 double seconds) {
  std::string out = absl::StrCat(what, ": ");
  if (start.sessions_left >= 0 && now.sessions_left >= 0) {
    absl::StrAppend(&out, "moved ", start.sessions_left - now.sessions_left, "/",
                    start.sessions_left, " sessions, ");
  }
  if (start.bytes_left > 0 && now.bytes_left >= 0) {
    const int64_t moved = start.bytes_left - now.bytes_left;
    const double rate = seconds > 0 ? moved / seconds : 0;
    absl::StrAppend(&out, Bytes(moved), "/", Bytes(start.bytes_left), " state, ",
                    Bytes(static_cast<int64_t>(rate)), "/s, ");
    if (rate > 0) absl::StrAppend(&out, absl::StrFormat("ETA %.0f s, ", now.bytes_left / rate));
  }
  absl::StrAppend(&out, absl::StrFormat("%.1f s", seconds));
  return out;
}

}  // namespace

MoveSample SessionsOn(const Cli& cli, const std::string& worker) {
  v1::ListSessionsResponse resp;
  MoveSample s;
  if (!ListAllSessions(cli, worker, &resp, /*timeout_s=*/2).ok()) return s;
  s.sessions_left = resp.sessions_size();
  s.bytes_left = 0;
  for (const v1::SessionInfo& i : resp.sessions()) {
    s.bytes_left += i.bytes().hot() + i.bytes().warm() + i.bytes().cold();
  }
  return s;
}

grpc::Status WithProgress(const Cli& cli, const std::string& what,
                          const std::function<MoveSample()>& sample,
                          const std::function<grpc::Status()>& call) {
  if (cli.json || !isatty(STDERR_FILENO)) return call();
  const MoveSample start = sample();
  std::future<grpc::Status> result = std::async(std::launch::async, call);
  const auto t0 = std::chrono::steady_clock::now();
  MoveSample now = start;
  auto last_sample = t0;
  size_t width = 0;
  while (result.wait_for(std::chrono::milliseconds(250)) != std::future_status::ready) {
    const auto t = std::chrono::steady_clock::now();
    if (t - last_sample >= std::chrono::seconds(1)) {
      now = sample();
      last_sample = t;
    }
    const std::string line = Line(what, start, now, std::chrono::duration<double>(t - t0).count());
    width = std::max(width, line.size());
    std::fprintf(stderr, "\r%-*s", static_cast<int>(width), line.c_str());
    std::fflush(stderr);
  }
  if (width > 0) std::fprintf(stderr, "\r%*s\r", static_cast<int>(width), "");
  return result.get();
}

}  // namespace rsd::ctl
