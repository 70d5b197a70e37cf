// rsdctl: the admin and client CLI of a Residuum cluster (DESIGN.md section 7).
//
//   rsdctl [--router ADDR] [-o json|table] [--tenant T] [--timeout S] [--api-key-file F]
//          <command> [flags]
//
// Flags may come before or after the command. Exit status: 0 on success, 1 on an RPC error
// (stderr: "rsdctl: <CODE>: <message>"), 2 on a usage error.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "storage/common/api_key.h"
#include "storage/common/tls.h"
#include "tools/rsdctl/args.h"
#include "tools/rsdctl/cli.h"
#include "tools/rsdctl/commands.h"

using rsd::ctl::Args;
using rsd::ctl::Chat;
using rsd::ctl::Cli;
using rsd::ctl::Create;
using rsd::ctl::Migrate;
using rsd::ctl::Models;
using rsd::ctl::NumberFlag;
using rsd::ctl::ParseArgs;
using rsd::ctl::SessionCall;
using rsd::ctl::Sessions;
using rsd::ctl::Usage;
using rsd::ctl::WorkerCommand;
using rsd::ctl::Workers;
namespace v1 = rsd::v1;

int main(int argc, char** argv) {
  const Args a = ParseArgs(argc, argv);
  Cli cli;
  const char* env = std::getenv("RSD_ROUTER");
  cli.router = a.Get("router", env != nullptr && *env != '\0' ? env : "127.0.0.1:50051");
  std::string output = a.Get("o", a.Get("output", "table"));
  if (a.Get("json") == "true") output = "json";
  if (output != "json" && output != "yaml" && output != "table" && output != "wide") {
    Usage(absl::StrCat("-o: '", output, "' is not table, wide, json or yaml"));
  }
  cli.json = output == "json" || output == "yaml";  // structured output
  cli.wide = output == "wide";
  rsd::ctl::SetYaml(output == "yaml");
  if (a.command == "version") return rsd::ctl::Version(cli);
  cli.tenant = a.Get("tenant");
  absl::StatusOr<std::string> key = rsd::LoadApiKey(a.Get("api-key-file"));
  if (!key.ok()) {
    std::fprintf(stderr, "rsdctl: %s\n", std::string(key.status().message()).c_str());
    return 2;
  }
  cli.bearer = rsd::BearerOf(*key);
  if (auto t = NumberFlag<double>(a, "timeout")) {
    if (!(*t > 0)) Usage("--timeout must be > 0 seconds");
    cli.timeout_s = *t;
    cli.timeout_s_set = true;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  const rsd::TlsFiles tls{a.Get("tls-cert"), a.Get("tls-key"), a.Get("tls-ca")};
  if (absl::Status s = rsd::CheckTlsFiles(tls, /*server=*/false); !s.ok()) {
    Usage(std::string(s.message()));
  }
  if (!tls.cert.empty() && !tls.client()) Usage("--tls-cert needs --tls-ca");
  cli.channel = grpc::CreateCustomChannel(cli.router, rsd::ChannelCredentialsFor(tls), args);
  cli.client = v1::Client::NewStub(cli.channel);
  cli.admin = v1::Admin::NewStub(cli.channel);

  const std::string& c = a.command;
  if (c == "create") return Create(cli, a);
  if (c == "chat") return Chat(cli, a);
  if (c == "close" || c == "undo" || c == "describe") return SessionCall(cli, a);
  if (c == "workers") return Workers(cli, a);
  if (c == "sessions") {
    if (!a.positional.empty()) Usage("'sessions' takes no arguments (use --worker W)");
    return Sessions(cli, a);
  }
  if (c == "models") return Models(cli, a);
  if (c == "migrate") return Migrate(cli, a);
  if (c == "keys") return rsd::ctl::Keys(cli, a);
  return WorkerCommand(cli, a);
}
