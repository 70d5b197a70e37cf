// Command-line flags as the command-line contract spells them (DESIGN.md section 7: --max-tokens,
// --data-dir) parsed by Abseil, which names them with underscores.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "absl/flags/parse.h"

namespace rsd {

// absl::ParseCommandLine after rewriting dashes to underscores in every `--flag-name` (up to an
// '='). The returned positional arguments point into storage that lives for the process.
inline std::vector<char*> ParseDashedCommandLine(int argc, char** argv) {
  static std::vector<std::string> storage;
  static std::vector<char*> fixed;
  storage.assign(argv, argv + argc);
  fixed.clear();
  for (std::string& a : storage) {
    if (a.rfind("--", 0) == 0) {
      const size_t end = std::min(a.find('='), a.size());
      for (size_t i = 2; i < end; ++i) {
        if (a[i] == '-') a[i] = '_';
      }
    }
    fixed.push_back(a.data());
  }
  return absl::ParseCommandLine(static_cast<int>(fixed.size()), fixed.data());
}

}  // namespace rsd
