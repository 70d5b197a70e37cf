#include "storage/common/flags.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string_view>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"

namespace rsd {
namespace {

void Underscore(std::string& a) {
  if (a.rfind("--", 0) != 0) return;
  const size_t end = std::min(a.find('='), a.size());
  for (size_t i = 2; i < end; ++i) {
    if (a[i] == '-') a[i] = '_';
  }
}

// The arguments of a flag file, one per line.
std::vector<std::string> ReadFlagFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "cannot read --flagfile %s\n", path.c_str());
    std::exit(1);
  }
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    const std::string trimmed(absl::StripAsciiWhitespace(line));
    if (trimmed.empty() || trimmed[0] == '#') continue;
    out.push_back(trimmed);
  }
  return out;
}

}  // namespace

std::string DashedFlagHelp() {
  std::vector<std::pair<std::string, absl::CommandLineFlag*>> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (flag->Filename().find("absl/") != std::string::npos) continue;
    flags.emplace_back(absl::StrReplaceAll(std::string(name), {{"_", "-"}}), flag);
  }
  std::sort(flags.begin(), flags.end());
  std::string out = "Flags:\n";
  for (const auto& [name, flag] : flags) {
    absl::StrAppend(&out, "  --", name, "\n      ", flag->Help(), " (default: \"",
                    flag->DefaultValue(), "\")\n");
  }
  absl::StrAppend(&out,
                  "  --flagfile\n      read flags from a file, one per line, in this spelling\n",
                  "  --help\n      this text\n");
  return out;
}

std::vector<char*> ParseDashedCommandLine(int argc, char** argv) {
  static std::vector<std::string> storage;
  static std::vector<char*> fixed;
  storage.clear();
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (i > 0 && (a == "--help" || a == "-h" || a == "--helpfull")) {
      std::printf("%s\n\n%s", std::string(absl::ProgramUsageMessage()).c_str(),
                  DashedFlagHelp().c_str());
      std::exit(0);
    }
    std::string path;
    if (a == "--flagfile" && i + 1 < argc) {
      path = argv[++i];
    } else if (a.rfind("--flagfile=", 0) == 0) {
      path = a.substr(11);
    }
    if (!path.empty()) {
      for (std::string& f : ReadFlagFile(path)) storage.push_back(std::move(f));
      continue;
    }
    storage.push_back(std::move(a));
  }
  fixed.clear();
  for (std::string& a : storage) {
    Underscore(a);
    fixed.push_back(a.data());
  }
  return absl::ParseCommandLine(static_cast<int>(fixed.size()), fixed.data());
}

void SkipMutexDeadlockChecks() {
  const char* keep = std::getenv("RSD_MUTEX_DEADLOCK_CHECKS");
  if (keep != nullptr && std::string_view(keep) == "1") return;
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

}  // namespace rsd
