// rsdctl's command line: flags may come before or after the command; each command accepts its own
// flags plus the global ones. A usage error prints a message and exits with status 2.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace rsd::ctl {

// A usage error: message, usage, exit 2.
[[noreturn]] void Usage(const std::string& msg);

struct Args {
  std::string command;
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>> flags;  // name → values (bool flags: "true")

  bool Has(const std::string& f) const { return flags.count(f) > 0; }
  std::string Get(const std::string& f, const std::string& def = "") const {
    auto it = flags.find(f);
    return it == flags.end() ? def : it->second.back();
  }
};

// Parses argv; prints the usage and exits on "help", --help or a usage error.
Args ParseArgs(int argc, char** argv);

// The value of --name as a number, if given; a value that is not one is a usage error.
template <typename T>
std::optional<T> NumberFlag(const Args& a, const std::string& name) {
  if (!a.Has(name)) return std::nullopt;
  const std::string v = a.Get(name);
  T out{};
  bool ok = false;
  if constexpr (std::is_same_v<T, float>) {
    ok = absl::SimpleAtof(v, &out);
  } else if constexpr (std::is_same_v<T, double>) {
    ok = absl::SimpleAtod(v, &out);
  } else {
    ok = absl::SimpleAtoi(v, &out);
  }
  if (!ok) Usage(absl::StrCat("--", name, ": '", v, "' is not a valid number"));
  return out;
}

// The command's one positional argument, or the value of `flag`.
std::string Target(const Args& a, const std::string& flag, const std::string& what);

}  // namespace rsd::ctl
