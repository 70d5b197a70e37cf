#include "storage/common/listen_policy.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "storage/common/log.h"

namespace rsd {
namespace {

// The host part of host:port ("[v6]:port" keeps its brackets off; a bare v6 address without a
// port is taken whole).
std::string_view HostOf(std::string_view address) {
  if (address.starts_with("ipv4:")) address.remove_prefix(5);
  if (address.starts_with("ipv6:")) address.remove_prefix(5);
  if (address.starts_with("[")) {
    const size_t close = address.find(']');
    return close == std::string_view::npos ? address : address.substr(1, close - 1);
  }
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) return address;
  if (address.find(':') != colon) return address;  // several colons: an unbracketed v6 address
  return address.substr(0, colon);
}

bool IsLoopbackV4(std::string_view host) {
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    const size_t dot = host.find('.', start);
    parts.push_back(host.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (parts.size() != 4 || parts[0] != "127") return false;
  for (std::string_view p : parts) {
    if (p.empty() || p.size() > 3) return false;
    int v = 0;
    for (char c : p) {
      if (c < '0' || c > '9') return false;
      v = v * 10 + (c - '0');
    }
    if (v > 255) return false;
  }
  return true;
}

}  // namespace

bool IsLoopbackAddress(std::string_view address) {
  const std::string_view host = HostOf(address);
  return host == "localhost" || host == "::1" || IsLoopbackV4(host);
}

absl::Status CheckPlaintextListen(std::string_view flag, std::string_view address, bool insecure) {
  if (insecure || IsLoopbackAddress(address)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      std::string(flag), " ", std::string(address),
      " is not a loopback address: without TLS this server listens on loopback only (127.0.0.1, "
      "[::1], localhost); pass --insecure-listen to serve plaintext there, where anyone who can "
      "reach the port can use it"));
}

absl::Status CheckListenFlags(
    bool insecure, std::initializer_list<std::pair<std::string_view, std::string_view>> flags) {
  for (const auto& [flag, address] : flags) {
    if (address.empty()) continue;
    if (absl::Status s = CheckPlaintextListen(flag, address, insecure); !s.ok()) return s;
    if (!IsLoopbackAddress(address)) {
      log::Warn(
          "serving plaintext on a non-loopback address (--insecure-listen): anyone who can "
          "reach it can use it",
          {{"flag", std::string(flag)}, {"address", std::string(address)}});
    }
  }
  return absl::OkStatus();
}

}  // namespace rsd
