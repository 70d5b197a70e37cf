// rsdctl keys: create (prints the key once), list, revoke.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "tools/rsdctl/commands.h"

namespace rsd::ctl {
namespace {

json KeyJson(const v1::KeyInfo& k) {
  return {{"id", k.id()},
          {"tenant", k.tenant()},
          {"role", k.role()},
          {"worker", k.worker()},
          {"created_unix_ms", k.created_unix_ms()},
          {"revoked_unix_ms", k.revoked_unix_ms()},
          {"expires_unix_ms", k.expires_unix_ms()}};
}

std::string When(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(unix_ms), absl::UTCTimeZone());
}

int CreateKey(Cli& cli, const Args& a) {
  if (a.positional.size() != 1) Usage("'keys create' takes no other arguments");
  const bool worker = a.Has("worker");
  if (worker && (a.Has("admin") || a.Has("tenant"))) {
    Usage("'keys create --worker' takes neither --tenant nor --admin");
  }
  if (!worker && a.Get("tenant").empty()) Usage("'keys create' needs --tenant T (or --worker)");
  v1::CreateKeyRequest req;
  req.set_tenant(a.Get("tenant"));
  req.set_role(worker ? "worker" : a.Has("admin") ? "admin" : "tenant");
  if (auto ttl = NumberFlag<int64_t>(a, "ttl")) req.set_ttl_seconds(*ttl);
  v1::CreateKeyResponse resp;
  const grpc::Status s = cli.admin->CreateKey(cli.Context().get(), req, &resp);
  if (!s.ok()) return Report(s, cli.router);
  if (cli.json) {
    json j = KeyJson(resp.info());
    j["key"] = resp.key();
    PrintJson(j);
  } else {
    std::printf("%s\n", resp.key().c_str());
    std::fprintf(stderr, "rsdctl: key %s (%s%s%s): shown once, not stored by the router\n",
                 resp.info().id().c_str(), resp.info().role().c_str(),
                 resp.info().tenant().empty() ? "" : ", tenant ", resp.info().tenant().c_str());
  }
  return 0;
}

int ListKeys(Cli& cli) {
  v1::ListKeysResponse resp;
  const grpc::Status s = cli.admin->ListKeys(cli.Context().get(), v1::ListKeysRequest(), &resp);
  if (!s.ok()) return Report(s, cli.router);
  if (cli.json) {
    json keys = json::array();
    for (const v1::KeyInfo& k : resp.keys()) keys.push_back(KeyJson(k));
    PrintJson({{"keys", keys}});
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {
      {"ID", "ROLE", "TENANT", "WORKER", "CREATED", "REVOKED", "EXPIRES"}};
  for (const v1::KeyInfo& k : resp.keys()) {
    rows.push_back({k.id(), k.role(), k.tenant().empty() ? "-" : k.tenant(),
                    k.worker().empty() ? "-" : k.worker(), When(k.created_unix_ms()),
                    When(k.revoked_unix_ms()), When(k.expires_unix_ms())});
  }
  PrintTable(rows);
  return 0;
}

int RevokeKey(Cli& cli, const Args& a) {
  if (a.positional.size() != 2) Usage("'keys revoke' takes one key id");
  v1::RevokeKeyRequest req;
  req.set_id(a.positional[1]);
  v1::KeyInfo resp;
  const grpc::Status s = cli.admin->RevokeKey(cli.Context().get(), req, &resp);
  if (!s.ok()) return Report(s, cli.router);
  if (cli.json) {
    PrintJson(KeyJson(resp));
  } else {
    std::printf("revoked %s\n", resp.id().c_str());
  }
  return 0;
}

}  // namespace

int Keys(Cli& cli, const Args& a) {
  const std::string sub = a.positional.empty() ? "" : a.positional[0];
  if (sub == "create") return CreateKey(cli, a);
  if (sub == "list") {
    if (a.positional.size() != 1) Usage("'keys list' takes no arguments");
    return ListKeys(cli);
  }
  if (sub == "revoke") return RevokeKey(cli, a);
  Usage("'keys' needs create, list or revoke");
}

}  // namespace rsd::ctl
