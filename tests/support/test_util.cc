#include "tests/support/test_util.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <vector>

namespace rsd::testing {

namespace fs = std::filesystem;

namespace {

// The directories this process made, removed when it exits (by the process that made them, not
// by a forked child that exits) unless RSD_KEEP_TEST_DIRS is set: a test run would otherwise
// leave gigabytes of stores and logs in the temporary directory.
class TempDirs {
 public:
  void Add(std::string dir) {
    std::lock_guard<std::mutex> lock(mu_);
    dirs_.push_back(std::move(dir));
  }
  ~TempDirs() {
    if (::getpid() != owner_ || std::getenv("RSD_KEEP_TEST_DIRS") != nullptr) return;
    for (const std::string& d : dirs_) {
      std::error_code ec;  // a child process may still be writing there: best effort
      fs::remove_all(d, ec);
    }
  }

 private:
  const pid_t owner_ = ::getpid();
  std::mutex mu_;
  std::vector<std::string> dirs_;
};

TempDirs& Made() {
  static TempDirs dirs;
  return dirs;
}

}  // namespace

bool ShortRun() {
  auto set = [](const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && std::string(v) == "1";
  };
  if (set("RSD_TEST_FULL")) return false;
  return kInstrumented || set("RSD_TEST_SHORT");
}

std::string MakeTempDir(const std::string& prefix) {
  const char* base = std::getenv("TEST_TMPDIR");
  fs::path root = base ? fs::path(base) : fs::temp_directory_path();
  std::string tmpl = (root / (prefix + "-XXXXXX")).string();
  char* p = ::mkdtemp(tmpl.data());
  if (p == nullptr) std::abort();
  Made().Add(tmpl);
  return tmpl;
}

std::string SourceDir() {
  const char* s = std::getenv("RSD_SOURCE_DIR");
  return s ? s : ".";
}

std::string SmolLM2Path() {
  if (const char* s = std::getenv("RSD_SMOLLM2")) return fs::exists(s) ? s : "";
  fs::path p = fs::path(SourceDir()) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
  return fs::exists(p) ? p.string() : "";
}

std::string Stories260KPath() {
  if (const char* s = std::getenv("RSD_STORIES260K")) return fs::exists(s) ? s : "";
  fs::path p = fs::path(SourceDir()) / ".." / "shared" / "models" / "stories260K.gguf";
  return fs::exists(p) ? fs::canonical(p).string() : "";
}

}  // namespace rsd::testing
