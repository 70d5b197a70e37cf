// rsdctl's command line (see args.h): the usage text and which flags each command takes.
#include "tools/rsdctl/args.h"

#include <cstdio>
#include <cstdlib>
#include <set>
#include <utility>

#include "absl/strings/str_split.h"

namespace rsd::ctl {
namespace {

constexpr char kUsage[] =
    "usage: rsdctl [--router ADDR] [-o table|wide|json|yaml] [--tenant T] [--timeout S]\n"
    "              [--api-key-file F] [--tls-ca F [--tls-cert F --tls-key F]] <command>\n"
    "  (rsdctl COMMAND --help: that command alone)\n"
    "  create [--model NAME] [--ttl SECONDS] [--pin] [--priority N]\n"
    "  chat --session ID [--message T | --script FILE] [--max-tokens N] [--temperature X]\n"
    "       [--top-k N] [--top-p X] [--seed N] [--stop S]... [--turn-id ID]\n"
    "       (no --message and no --script: one turn per line of stdin; with several turns,\n"
    "       --turn-id ID gives them ids ID-1, ID-2, ...)\n"
    "  close ID | undo ID | describe ID (all tenants' sessions unless --tenant is given)\n"
    "  workers | sessions [--worker W] | models\n"
    "  cordon W | uncordon W | drain W | failover W | migrate ID --to W [--form F]\n"
    "  (migrate prints the bytes moved: payload, framing, tokens, wire, and the time; drain and\n"
    "  failover print the worker and every session they moved)\n"
    "  keys create --tenant T [--admin] [--ttl SECONDS] | keys create --worker [--ttl SECONDS]\n"
    "       | keys list | keys revoke ID (--ttl: the key expires then; rotate by creating a new\n"
    "       key, moving clients to it and revoking the old one)\n"
    "  (with --auth on the router; create prints the key once, list and revoke show ids)\n"
    "  version\n"
    "The router defaults to $RSD_ROUTER or 127.0.0.1:50051; --timeout defaults to 600 s for chat,\n"
    "drain and failover, 300 s for migrate, 30 s otherwise. The API key comes from --api-key-file "
    "F\n"
    "or $RSD_API_KEY (sent as 'authorization: Bearer <key>'). --tls-ca F dials the router over "
    "TLS,\n"
    "verifying it against that CA (--tls-cert and --tls-key: a client certificate to present).\n";

const std::set<std::string> kBoolFlags = {"pin", "json", "help", "admin"};
const std::map<std::string, std::set<std::string>> kCommandFlags = {
    {"create", {"model", "ttl", "pin", "priority"}},
    {"chat",
     {"session", "message", "script", "max-tokens", "temperature", "top-k", "top-p", "seed", "stop",
      "turn-id"}},
    {"close", {"session"}},
    {"undo", {"session"}},
    {"describe", {"session"}},
    {"workers", {}},
    {"sessions", {"worker"}},
    {"models", {}},
    {"cordon", {"worker"}},
    {"uncordon", {"worker"}},
    {"drain", {"worker"}},
    {"failover", {"worker"}},
    {"migrate", {"session", "to", "form"}},
    {"keys", {"tenant", "admin", "worker", "ttl"}},
    {"version", {}},
};

// The lines of kUsage about `command`: those naming it as a word, with their continuation lines
// (indented further, or starting with '(').
std::string CommandUsage(const std::string& command) {
  std::string out =
      "usage: rsdctl [--router ADDR] [-o table|wide|json|yaml] [--tenant T] [--timeout S]\n"
      "              [--api-key-file F] [--tls-ca F [--tls-cert F --tls-key F]]\n";
  bool in = false;
  for (const absl::string_view line : absl::StrSplit(kUsage, '\n')) {
    if (line.empty() || line.rfind("usage:", 0) == 0) continue;
    const bool continuation = line.rfind("   ", 0) == 0 || line.rfind("  (", 0) == 0;
    if (!continuation) {
      in = false;
      for (absl::string_view word : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
        in = in || word == command;
      }
    }
    if (in) absl::StrAppend(&out, line, "\n");
  }
  return out;
}

const std::set<std::string> kGlobalFlags = {"router", "o",        "output", "json",
                                            "tenant", "timeout",  "help",   "api-key-file",
                                            "tls-ca", "tls-cert", "tls-key"};

bool KnownAnywhere(const std::string& name) {
  if (kGlobalFlags.count(name)) return true;
  for (const auto& [command, flags] : kCommandFlags) {
    if (flags.count(name)) return true;
  }
  return false;
}

}  // namespace

// A usage error: message, usage, exit 2.
[[noreturn]] void Usage(const std::string& msg) {
  std::fprintf(stderr, "rsdctl: %s (rsdctl help: usage)\n", msg.c_str());
  std::exit(2);
}

Args ParseArgs(int argc, char** argv) {
  Args a;
  std::vector<std::pair<std::string, std::string>> raw;  // (name, value)
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      for (++i; i < argc; ++i) a.positional.push_back(argv[i]);
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      if (a.command.empty()) {
        a.command = arg;
      } else {
        a.positional.push_back(arg);
      }
      continue;
    }
    std::string name = arg.substr(arg[1] == '-' ? 2 : 1);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    for (char& c : name) {
      if (c == '_') c = '-';
    }
    if (!KnownAnywhere(name)) Usage(absl::StrCat("unknown flag ", arg));
    // `keys create --worker` is a switch; elsewhere --worker names one.
    if (kBoolFlags.count(name) || (a.command == "keys" && name == "worker")) {
      raw.emplace_back(name, value.value_or("true"));
      continue;
    }
    if (!value.has_value()) {
      if (i + 1 >= argc) Usage(absl::StrCat("flag ", arg, " needs a value"));
      value = argv[++i];
    }
    raw.emplace_back(name, *value);
  }
  if (a.command.empty() || a.command == "help") {
    if (a.command == "help" || !raw.empty()) {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    std::fputs(kUsage, stderr);
    Usage("no command given");
  }
  auto allowed = kCommandFlags.find(a.command);
  if (allowed == kCommandFlags.end()) Usage(absl::StrCat("unknown command '", a.command, "'"));
  for (auto& [name, value] : raw) {
    if (!kGlobalFlags.count(name) && !allowed->second.count(name)) {
      Usage(absl::StrCat("unknown flag --", name, " for '", a.command, "'"));
    }
    a.flags[name].push_back(value);
  }
  if (a.Has("help")) {
    std::fputs(CommandUsage(a.command).c_str(), stdout);
    std::exit(0);
  }
  return a;
}

std::string Target(const Args& a, const std::string& flag, const std::string& what) {
  if (a.positional.size() > 1) {
    Usage(absl::StrCat("'", a.command, "' takes one ", what, ", got ", a.positional.size()));
  }
  if (!a.positional.empty()) return a.positional[0];
  if (a.Has(flag)) return a.Get(flag);
  Usage(absl::StrCat("'", a.command, "' needs a ", what));
}

}  // namespace rsd::ctl
