// rsd-router: the session journal, the worker registry and the client/admin/registry services
// (DESIGN.md sections 3, 5, 7). Only wiring here.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "router/gatekeeper.h"
#include "router/grpc_worker_client.h"
#include "router/http_service.h"
#include "router/journal.h"
#include "router/registry.h"
#include "router/router_service.h"
#include "storage/common/flags.h"
#include "storage/common/listen_policy.h"
#include "storage/common/log.h"
#include "storage/common/tls.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "address to serve on (port 0: any free port)");
ABSL_FLAG(std::string, data_dir, "",
          "the session journal's directory (required; created if missing)");
ABSL_FLAG(std::string, log_format, "text", "log lines as text or json (one object per line)");
ABSL_FLAG(std::string, log_level, "info",
          "the least severe log lines kept: debug, info, warn, error");
ABSL_FLAG(std::string, http_listen, "",
          "address of the HTTP port: OpenAI-compatible /v1/*, /health, /metrics (empty: none)");
ABSL_FLAG(bool, insecure_listen, false,
          "allow --listen and --http-listen on non-loopback addresses without TLS (plaintext: "
          "anyone who can reach the port can use it)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve TLS on --listen and --http-listen (with --tls-key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA: mutual TLS with workers (a worker's certificate must name its --id; the router "
          "presents --tls-cert to workers and verifies theirs against this CA)");
ABSL_FLAG(
    bool, auth, false,
    "require API keys (authorization: Bearer <key>) on every gRPC and HTTP call; on the first "
    "start with it, an admin key is written to <data-dir>/admin.key (mode 0600)");
ABSL_FLAG(int64_t, max_sessions_per_tenant, 10000,
          "sessions one tenant may hold (0: unlimited); more are RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_pinned_per_tenant, 64,
          "pinned sessions (never spilled) one tenant may hold (0: unlimited)");
ABSL_FLAG(int64_t, max_turns_per_tenant, 256,
          "turns of one tenant running at once (0: unlimited); more are RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_history_tokens_per_tenant, 0,
          "tokens of history one tenant's sessions may hold together (0: unlimited); a turn "
          "starting at or over it is RESOURCE_EXHAUSTED");
ABSL_FLAG(bool, prefix_routing, true,
          "place a new session whose first turn is known (OpenAI requests, CreateSession's "
          "first_turn) on a worker that holds its prompt's leading state, weighed against load");
ABSL_FLAG(double, heartbeat_timeout, 5.0, "seconds without a heartbeat before a worker is dead");
ABSL_FLAG(double, heartbeat_interval, 1.0, "seconds between heartbeats, told to workers");
ABSL_FLAG(int32_t, max_message_bytes, 4 << 20, "largest gRPC message the router sends or accepts");

namespace {

int Fail(const std::string& msg) {
  rsd::log::Error(msg);
  return 1;
}

// The host part of `listen` with `port`.
std::string WithPort(const std::string& listen, int port) {
  const size_t colon = listen.rfind(':');
  return (colon == std::string::npos ? listen : listen.substr(0, colon)) + ":" +
         std::to_string(port);
}

}  // namespace

namespace {

// SIGINT/SIGTERM, blocked so that sigwait takes them; before gRPC starts its threads.
sigset_t BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

// Serves the router's services on `listen` until SIGINT or SIGTERM.
int Serve(rsd::router::RouterCore& core, const rsd::router::Gatekeeper& gate,
          const rsd::TlsFiles& tls, const std::string& listen, const std::string& data_dir,
          const std::string& http_listen, int max_bytes, sigset_t signals) {
  rsd::router::ClientService client_service(&core, &gate);
  rsd::router::AdminService admin_service(&core, &gate);
  rsd::router::RegistryService registry_service(&core, &gate);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, rsd::ServerCredentialsFor(tls, rsd::ClientCerts::kRequest),
                           &port);
  builder.SetMaxReceiveMessageSize(max_bytes);
  builder.SetMaxSendMessageSize(max_bytes);
  builder.RegisterService(&client_service);
  builder.RegisterService(&admin_service);
  builder.RegisterService(&registry_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fail("cannot listen on " + listen + " (address in use or invalid?)");
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  rsd::HttpServer http(tls.cert, tls.key);
  if (!http_listen.empty()) {
    rsd::router::AddOpenAiRoutes(http, core, gate);
    http.ServeMetrics({core.metrics().registry()}, [&core] { core.RefreshMetrics(); });
    http.ServeHealth([] { return std::string(); });
    absl::StatusOr<int> http_port = http.Start(http_listen);
    if (!http_port.ok()) return Fail(std::string(http_port.status().message()));
    std::printf("rsd-router serving %s on %s\n", tls.server() ? "HTTPS" : "HTTP",
                WithPort(http_listen, *http_port).c_str());
  }
  std::printf("rsd-router listening on %s (%s, data dir %s)\n", WithPort(listen, port).c_str(),
              tls.server() ? (tls.client() ? "mutual TLS" : "TLS") : "plaintext", data_dir.c_str());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  rsd::log::Info("shutting down", {{"signal", std::to_string(sig)}});
  http.Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server->Wait();
  return 0;
}

// The TLS files, and without TLS the plaintext listen policy.
absl::Status CheckServingFlags(const rsd::TlsFiles& tls) {
  if (absl::Status s = rsd::CheckTlsFiles(tls, /*server=*/true); !s.ok()) return s;
  if (tls.server()) return absl::OkStatus();  // --listen and --http-listen both serve TLS
  return rsd::CheckListenFlags(absl::GetFlag(FLAGS_insecure_listen),
                               {{"--listen", absl::GetFlag(FLAGS_listen)},
                                {"--http-listen", absl::GetFlag(FLAGS_http_listen)}});
}

// With --auth, an admin key on the first start (<data-dir>/admin.key); without, a warning.
absl::Status PrepareAuth(rsd::router::KeyStore& keys, const std::string& data_dir, bool auth) {
  if (!auth) {
    rsd::log::Warn(
        "API keys are off (no --auth): any caller may use any tenant and the Admin "
        "service");
    return absl::OkStatus();
  }
  const std::string path = data_dir + "/admin.key";
  absl::StatusOr<std::string> admin = rsd::router::EnsureAdminKey(keys, path);
  if (!admin.ok()) return admin.status();
  if (!admin->empty())
    rsd::log::Info("wrote a new admin API key", {{"key", *admin}, {"path", path}});
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);  // a client that goes away is a failed write, not a dead router
  rsd::SkipMutexDeadlockChecks();
  absl::SetProgramUsageMessage(
      "rsd-router --listen ADDR --data-dir DIR [--http-listen ADDR] [flags]: the session journal,\n"
      "worker registry and placement, the client and admin gRPC services, and with --http-listen\n"
      "the OpenAI-compatible HTTP API, /health and /metrics");
  std::vector<char*> rest = rsd::ParseDashedCommandLine(argc, argv);
  if (rest.size() > 1) return Fail(std::string("unexpected argument '") + rest[1] + "'");
  if (absl::Status s = rsd::log::Init("rsd-router", absl::GetFlag(FLAGS_log_format),
                                      absl::GetFlag(FLAGS_log_level));
      !s.ok()) {
    return Fail(std::string(s.message()));
  }
  const std::string listen = absl::GetFlag(FLAGS_listen);
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  const double hb_timeout = absl::GetFlag(FLAGS_heartbeat_timeout);
  const double hb_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  const int max_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  if (data_dir.empty()) return Fail("--data-dir is required");
  if (!(hb_timeout > 0)) return Fail("--heartbeat-timeout must be > 0 seconds");
  if (!(hb_interval > 0)) return Fail("--heartbeat-interval must be > 0 seconds");
  if (max_bytes <= 0) return Fail("--max-message-bytes must be > 0");
  const rsd::TlsFiles tls{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                          absl::GetFlag(FLAGS_tls_ca)};
  if (absl::Status s = CheckServingFlags(tls); !s.ok()) return Fail(std::string(s.message()));
  const sigset_t signals = BlockStopSignals();

  absl::StatusOr<std::unique_ptr<rsd::router::Journal>> journal =
      rsd::router::Journal::Open(data_dir);
  if (!journal.ok()) return Fail(std::string(journal.status().ToString()));
  rsd::router::SystemClock clock;
  rsd::router::Registry registry(&clock, absl::Seconds(hb_timeout));
  rsd::router::RouterOptions options;
  options.heartbeat_interval_seconds = hb_interval;
  options.prefix_routing = absl::GetFlag(FLAGS_prefix_routing);
  options.quotas.sessions = std::max<int64_t>(0, absl::GetFlag(FLAGS_max_sessions_per_tenant));
  options.quotas.turns = std::max<int64_t>(0, absl::GetFlag(FLAGS_max_turns_per_tenant));
  options.quotas.pinned = std::max<int64_t>(0, absl::GetFlag(FLAGS_max_pinned_per_tenant));
  options.quotas.history_tokens =
      std::max<int64_t>(0, absl::GetFlag(FLAGS_max_history_tokens_per_tenant));
  rsd::router::GrpcWorkerClients workers(std::max(max_bytes, 16 << 20),
                                         rsd::ChannelCredentialsFor(tls));
  rsd::router::RouterCore core(journal->get(), &registry, &workers, options);
  if (absl::Status s = core.LoadJournal(); !s.ok()) return Fail(std::string(s.ToString()));
  rsd::router::KeyStore keys((*journal)->rocks());
  const bool auth = absl::GetFlag(FLAGS_auth);
  if (absl::Status s = PrepareAuth(keys, data_dir, auth); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  absl::StatusOr<std::unique_ptr<rsd::router::AuditLog>> audit =
      rsd::router::AuditLog::Open(data_dir + "/audit.log");
  if (!audit.ok()) return Fail(std::string(audit.status().message()));
  const rsd::router::Gatekeeper gate(&keys, auth, audit->get(), /*worker_certs=*/tls.client());
  core.StartFailoverMonitor();
  return Serve(core, gate, tls, listen, data_dir, absl::GetFlag(FLAGS_http_listen), max_bytes,
               signals);
}
