// rsdctl's RPC error reporting and output helpers (see cli.h).
#include "tools/rsdctl/cli.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace rsd::ctl {
namespace {

const char* CodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

int Report(const grpc::Status& s, const std::string& router) {
  if (s.ok()) return 0;
  std::string msg = s.error_message();
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE && msg.find("router") == std::string::npos &&
      msg.find("worker") == std::string::npos) {
    msg = absl::StrCat(msg, " (router ", router, ")");
  }
  std::fprintf(stderr, "rsdctl: %s: %s\n", CodeName(s.error_code()), msg.c_str());
  return 1;
}

namespace {
bool yaml_output = false;
}  // namespace

void SetYaml(bool yaml) { yaml_output = yaml; }

std::string Yaml(const json& v, int indent) {
  const std::string pad(static_cast<size_t>(indent), ' ');
  std::string out;
  if (v.is_object() && !v.empty()) {
    for (const auto& [k, item] : v.items()) {
      const bool block = (item.is_object() || item.is_array()) && !item.empty();
      absl::StrAppend(&out, pad, Dump(json(k)), ":", block ? "\n" : " ",
                      block ? Yaml(item, indent + 2) : Yaml(item, 0));
    }
    return out;
  }
  if (v.is_array() && !v.empty()) {
    for (const auto& item : v) {
      const bool block = (item.is_object() || item.is_array()) && !item.empty();
      std::string body = Yaml(item, block ? indent + 2 : 0);
      // The first line of a block item goes on the dash's line.
      if (block) body = body.substr(static_cast<size_t>(indent + 2));
      absl::StrAppend(&out, pad, "- ", body);
    }
    return out;
  }
  return absl::StrCat(pad, Dump(v), "\n");  // scalars, {} and []
}

void PrintJson(const json& j) {
  const std::string text = yaml_output ? absl::StrCat("---\n", Yaml(j)) : Dump(j) + "\n";
  std::fputs(text.c_str(), stdout);
  std::fflush(stdout);
}

int Version(const Cli& cli) {
  const json v = {{"rsdctl", RSD_VERSION}, {"protocol", "rsd.v1"}, {"router", cli.router}};
  if (cli.json) {
    PrintJson(v);
  } else {
    std::printf("rsdctl %s (protocol rsd.v1)\n", RSD_VERSION);
  }
  return 0;
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

std::string Bytes(int64_t n) {
  if (n >= (1 << 30)) return absl::StrFormat("%.1fG", n / double(1 << 30));
  if (n >= (1 << 20)) return absl::StrFormat("%.1fM", n / double(1 << 20));
  if (n >= (1 << 10)) return absl::StrFormat("%.1fK", n / double(1 << 10));
  return absl::StrCat(n);
}

}  // namespace rsd::ctl
