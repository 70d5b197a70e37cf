#include "tests/support/test_util.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

namespace rsd::testing {

namespace fs = std::filesystem;

std::string MakeTempDir(const std::string& prefix) {
  const char* base = std::getenv("TEST_TMPDIR");
  fs::path root = base ? fs::path(base) : fs::temp_directory_path();
  std::string tmpl = (root / (prefix + "-XXXXXX")).string();
  char* p = ::mkdtemp(tmpl.data());
  if (p == nullptr) std::abort();
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
