// What every rsdctl command shares: the connection to the router, the output mode, and the
// printing of results and RPC errors.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "rsd/v1/admin.grpc.pb.h"
#include "rsd/v1/client.grpc.pb.h"

namespace rsd::ctl {

// Keys print in the order written (session first), which reads better than sorted.
using json = nlohmann::ordered_json;

struct Cli {
  std::string router;
  bool json = false;  // structured output (-o json or -o yaml)
  bool wide = false;  // -o wide: tables with more columns
  std::string tenant;
  std::string bearer;  // "Bearer <key>" or "" (--api-key-file, $RSD_API_KEY)
  double timeout_s = 30;
  bool timeout_s_set = false;  // --timeout given (chat's default is longer)
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Client::Stub> client;
  std::unique_ptr<v1::Admin::Stub> admin;

  std::unique_ptr<grpc::ClientContext> Context() const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
    if (!tenant.empty()) ctx->AddMetadata("x-rsd-tenant", tenant);
    if (!bearer.empty()) ctx->AddMetadata("authorization", bearer);
    return ctx;
  }
};

// Prints the RPC error; returns the exit status (0 if OK).
int Report(const grpc::Status& s, const std::string& router);

// One JSON value on one line of stdout (invalid UTF-8 replaced), flushed; with SetYaml(true),
// the same value as a YAML document instead.
void PrintJson(const json& j);
void SetYaml(bool yaml);
// `value` as YAML (block style; strings in JSON quoting, which YAML reads), each line indented.
std::string Yaml(const json& value, int indent = 0);
// `rsdctl version`: this build's version and protocol.
int Version(const Cli& cli);
// Rows of columns, aligned.
void PrintTable(const std::vector<std::vector<std::string>>& rows);
// A byte count for people: "512", "1.5K", "3.2M", "1.0G".
std::string Bytes(int64_t n);

}  // namespace rsd::ctl
