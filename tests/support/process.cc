#include "tests/support/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"

namespace rsd::testing {
namespace {

// This process's environment for a child, plus RSD_MUTEX_DEADLOCK_CHECKS=1: the servers a test
// starts keep Abseil's lock-order checks (SkipMutexDeadlockChecks). Built before fork: the child
// only calls execve.
std::vector<char*> ChildEnvironment() {
  static char keep_checks[] = "RSD_MUTEX_DEADLOCK_CHECKS=1";
  const size_t name = std::strlen("RSD_MUTEX_DEADLOCK_CHECKS=");
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, keep_checks, name) != 0) env.push_back(*e);
  }
  env.push_back(keep_checks);
  env.push_back(nullptr);
  return env;
}

}  // namespace

absl::StatusOr<Process> Process::Start(const std::vector<std::string>& argv,
                                       const std::string& log_path) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", log_path));
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::vector<char*> env = ChildEnvironment();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd);
    return absl::InternalError("fork failed");
  }
  if (pid == 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::close(fd);
    ::setpgid(0, 0);
    ::execve(args[0], args.data(), env.data());
    std::fprintf(stderr, "exec %s failed: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(fd);
  Process p;
  p.pid_ = pid;
  p.log_ = log_path;
  return p;
}

Process& Process::operator=(Process&& o) noexcept {
  if (this != &o) {
    if (pid_ > 0 && running()) {
      ::kill(pid_, SIGKILL);
      Wait(5);
    }
    pid_ = o.pid_;
    status_ = o.status_;
    log_ = std::move(o.log_);
    o.pid_ = -1;
  }
  return *this;
}

Process::~Process() {
  if (pid_ > 0 && running()) {
    ::kill(pid_, SIGKILL);
    Wait(5);
  }
}

bool Process::running() {
  if (pid_ <= 0 || status_ >= 0) return false;
  int st = 0;
  const pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return true;
}

void Process::Signal(int sig) {
  if (pid_ > 0 && running()) ::kill(pid_, sig);
}

int Process::Wait(double timeout_seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  while (running()) {
    if (std::chrono::steady_clock::now() > end) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return status_;
}

int Process::Stop(double grace_seconds) {
  Signal(SIGTERM);
  int st = Wait(grace_seconds);
  if (st == -1) {
    Signal(SIGKILL);
    st = Wait(5);
  }
  return st;
}

int64_t Process::RssBytes() const {
  std::ifstream in(absl::StrCat("/proc/", pid_, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

std::string Process::Log() const {
  std::ifstream in(log_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv,
                                       double timeout_seconds) {
  char tmpl[] = "/tmp/rsd-cmd-XXXXXX";
  const int fd = ::mkstemp(tmpl);
  if (fd < 0) return absl::InternalError("mkstemp failed");
  ::close(fd);
  const std::string out_path = tmpl;
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::vector<char*> env = ChildEnvironment();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int out = ::open(out_path.c_str(), O_WRONLY | O_TRUNC);
    const int err = ::open("/dev/null", O_WRONLY);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::execve(args[0], args.data(), env.data());
    ::_exit(127);
  }
  int st = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  for (;;) {
    const pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() > end) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      ::unlink(out_path.c_str());
      return absl::DeadlineExceededError(absl::StrCat(argv[0], " did not finish in ",
                                                      timeout_seconds, " s"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::ifstream in(out_path);
  std::stringstream ss;
  ss << in.rdbuf();
  ::unlink(out_path.c_str());
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    return absl::InternalError(absl::StrCat(argv[0], " exited with status ", st, ": ", ss.str()));
  }
  return ss.str();
}

}  // namespace rsd::testing
