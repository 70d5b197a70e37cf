// rsd-worker: one model, its sessions and the batching scheduler behind rsd.v1.Worker; registers
// with the router and heartbeats its load, fingerprints and rebuild rates.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "proto/grpc_status.h"
#include "rsd/v1/worker.grpc.pb.h"
#include "storage/common/api_key.h"
#include "storage/common/flags.h"
#include "storage/common/http_server.h"
#include "storage/common/listen_policy.h"
#include "storage/common/log.h"
#include "storage/common/status.h"
#include "storage/common/tls.h"
#include "worker/service/worker_metrics.h"
#include "worker/service/worker_service.h"

ABSL_FLAG(std::string, model, "", "model: a GGUF file or a Hugging Face folder (required)");
ABSL_FLAG(std::string, model_name, "", "the name clients ask for (default: the file's stem)");
ABSL_FLAG(std::string, listen, "127.0.0.1:50061", "address to serve rsd.v1.Worker on");
ABSL_FLAG(std::string, advertise, "", "address the router should use (default: --listen)");
ABSL_FLAG(std::string, router, "", "router address to register with (empty: standalone)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain (naming --id): mutual TLS on --listen, and presented to the "
          "router and peer workers (with --tls-key and --tls-ca)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA: the router's and peer workers' certificates are verified against it (alone: "
          "TLS to the router only)");
ABSL_FLAG(std::string, tls_peers, "",
          "certificate names allowed to call the Worker service over mutual TLS, comma-separated: "
          "the router's and the peer workers' ('*.domain' matches one leading label); any other "
          "certificate --tls-ca signed is refused with PERMISSION_DENIED (empty: any it signed)");
ABSL_FLAG(std::string, api_key_file, "",
          "file holding the worker API key presented to a router run with --auth (default: the "
          "RSD_API_KEY environment variable)");
ABSL_FLAG(std::string, data_dir, "",
          "RocksDB data dir for sessions (required; created if missing)");
ABSL_FLAG(std::string, log_format, "text", "log lines as text or json (one object per line)");
ABSL_FLAG(std::string, log_level, "info",
          "the least severe log lines kept: debug, info, warn, error");
ABSL_FLAG(std::string, http_listen, "",
          "address of the HTTP port: /metrics, /health (empty: none)");
ABSL_FLAG(bool, insecure_listen, false,
          "allow --listen and --http-listen on non-loopback addresses without TLS (plaintext: "
          "anyone who can reach the port can use it)");
ABSL_FLAG(std::string, id, "", "worker name (default: worker-<port>)");
ABSL_FLAG(std::string, device, "cpu",
          "what computes: cpu, cuda, cuda:N, or cuda-emu (the CUDA backend on the host emulation "
          "of a GPU); CPU and CUDA workers share one numerics fingerprint");
ABSL_FLAG(int64_t, device_memory, 0,
          "bytes of device memory the worker may use (0: what the device has; on the CPU, no cap)");
ABSL_FLAG(int, threads, 0, "compute threads of the CPU backend (0: all cores)");
ABSL_FLAG(int64_t, hot_bytes, 256ll << 20, "hot K/V pool bytes (all sessions)");
ABSL_FLAG(int, hot_budget_tokens, 0, "per-session hot budget in tokens (0: unbounded)");
ABSL_FLAG(int64_t, warm_bytes, 256ll << 20, "warm (host) checkpoint bytes");
ABSL_FLAG(std::string, spill_form, "residual",
          "checkpoint plan: residual (every form can be exported), kv, auto (per layer; a "
          "kv-planned layer keeps no residuals, so such sessions cannot move as residuals)");
ABSL_FLAG(int, max_context, 0, "context length (0: the model's)");
ABSL_FLAG(
    bool, prefix_reuse, true,
    "a session's first turn starts from the K/V blocks another session of its tenant (resident, "
    "or the kept prefix of a closed one) computed for the same leading prompt tokens, shared "
    "(exact: the same bits as a prefill)");
ABSL_FLAG(int, prefix_cache_entries, 8,
          "closed sessions whose leading hot chunks stay as donors for their tenant's later first "
          "turns (least recently used dropped first, and before any session is spilled; 0: none)");
ABSL_FLAG(int, max_queue, 256, "turns waiting for admission before requests are refused");
ABSL_FLAG(int, max_running, 64, "turns in the batch at once");
ABSL_FLAG(int, prefill_chunk, 256, "most prompt tokens of one turn per step");
ABSL_FLAG(int, step_tokens, 512, "most tokens per step");
ABSL_FLAG(int, stream_buffer, 64, "events buffered per turn before its session pauses");
ABSL_FLAG(int, default_max_tokens, 256, "max_tokens of a turn that does not set it");
ABSL_FLAG(int64_t, max_message_bytes, 64 << 10, "largest user message in bytes");
ABSL_FLAG(double, stall_seconds, 30, "health turns NOT_SERVING after this long without progress");

namespace rsd {
namespace {

std::string Stem(const std::string& path) {
  std::filesystem::path p(path);
  if (p.filename().empty()) p = p.parent_path();
  return p.stem().string();
}

int Fail(const std::string& msg) {
  log::Error(msg);
  return 1;
}

// Blocks SIGINT and SIGTERM in the calling thread (and the threads it starts later); returns them.
sigset_t BlockStopSignals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  return sigs;
}

EngineOptions EngineOptionsFromFlags(const std::string& model) {
  EngineOptions eo;
  eo.model_path = model;
  eo.device = absl::GetFlag(FLAGS_device);
  eo.device_memory = static_cast<size_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_device_memory)));
  eo.threads = absl::GetFlag(FLAGS_threads) > 0
                   ? absl::GetFlag(FLAGS_threads)
                   : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  eo.kv_budget_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_hot_bytes));
  eo.hot_budget_tokens = absl::GetFlag(FLAGS_hot_budget_tokens);
  eo.spill_form = absl::GetFlag(FLAGS_spill_form);
  eo.max_context = absl::GetFlag(FLAGS_max_context);
  eo.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  eo.keep_residuals = true;  // idle sessions may spill in the residual form
  return eo;
}

SchedulerOptions SchedulerOptionsFromFlags() {
  SchedulerOptions sched;
  sched.max_queue = absl::GetFlag(FLAGS_max_queue);
  sched.max_running = absl::GetFlag(FLAGS_max_running);
  sched.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  sched.step_tokens = absl::GetFlag(FLAGS_step_tokens);
  sched.stream_buffer = absl::GetFlag(FLAGS_stream_buffer);
  sched.stall_seconds = absl::GetFlag(FLAGS_stall_seconds);
  return sched;
}

TlsFiles TlsFromFlags() {
  return {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_ca)};
}

WorkerServiceOptions ServiceOptionsFromFlags(const std::string& model, const std::string& listen) {
  WorkerServiceOptions wo;
  wo.model_name = absl::GetFlag(FLAGS_model_name).empty() ? Stem(model)
                                                           : absl::GetFlag(FLAGS_model_name);
  wo.default_max_tokens = absl::GetFlag(FLAGS_default_max_tokens);
  wo.max_message_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_max_message_bytes));
  wo.address = absl::GetFlag(FLAGS_advertise);
  if (wo.address.empty()) wo.address = listen;
  wo.id = absl::GetFlag(FLAGS_id).empty()
              ? absl::StrCat("worker-", listen.substr(listen.rfind(':') + 1))
              : absl::GetFlag(FLAGS_id);
  wo.peer_credentials = ChannelCredentialsFor(TlsFromFlags());
  return wo;
}

// The worker's side of the router: registers (again whenever the router asks), then heartbeats.
struct RouterLink {
  std::string router;
  std::string bearer;                        // "Bearer <key>" or ""
  std::unique_ptr<v1::Registry::Stub> stub;  // null: standalone
  bool registered = false;
  double interval = 1.0;  // seconds between calls, as the router asks
  std::string last_error;

  // One Register or Heartbeat call; an error is printed when it differs from the last one.
  void Beat(WorkerService& service, const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    if (!bearer.empty()) ctx.AddMetadata("authorization", bearer);
    grpc::Status st;
    if (!registered) {
      v1::RegisterRequest req;
      *req.mutable_status() = service.Status();
      std::vector<uint32_t> turns;
      for (const v1::SessionRef& r : service.SessionRefs(&turns)) *req.add_sessions() = r;
      for (uint32_t t : turns) req.add_session_turns(t);
      v1::RegisterResponse resp;
      st = stub->Register(&ctx, req, &resp);
      if (st.ok()) {
        registered = true;
        service.Drop(resp.drop());
        if (resp.heartbeat_interval_seconds() > 0) interval = resp.heartbeat_interval_seconds();
        log::Info("registered with the router", {{"worker", id}, {"router", router}});
      }
    } else {
      v1::HeartbeatRequest req;
      *req.mutable_status() = service.Status();
      v1::HeartbeatResponse resp;
      st = stub->Heartbeat(&ctx, req, &resp);
      if (st.ok() && resp.reregister()) registered = false;
    }
    if (!st.ok() && st.error_message() != last_error) {
      log::Warn("router call failed",
                {{"worker", id}, {"router", router}, {"error", FromGrpc(st).ToString()}});
    }
    last_error = st.ok() ? "" : st.error_message();
  }
};

// Until `stop`: health follows the scheduler's progress; heartbeats go to the router.
void HeartbeatLoop(const std::atomic<bool>& stop, Scheduler& scheduler, WorkerService& service,
                   grpc::HealthCheckServiceInterface* health, const std::string& id,
                   const std::string& bearer) {
  RouterLink link;
  link.router = absl::GetFlag(FLAGS_router);
  link.bearer = bearer;
  if (!link.router.empty()) {
    link.stub = v1::Registry::NewStub(
        grpc::CreateChannel(link.router, ChannelCredentialsFor(TlsFromFlags())));
  }
  bool last_healthy = true;
  while (!stop.load()) {
    const bool healthy = scheduler.Healthy();
    if (healthy != last_healthy) {
      health->SetServingStatus(healthy);
      log::Write(
          healthy ? log::Level::kInfo : log::Level::kError, "health changed",
          {{"worker", id},
           {"health", healthy ? "SERVING" : "NOT_SERVING (the scheduler makes no progress)"}});
      last_healthy = healthy;
    }
    if (link.stub) link.Beat(service, id);
    for (int i = 0; i < 10 && !stop.load(); ++i) {
      std::this_thread::sleep_for(std::chrono::duration<double>(link.interval / 10));
    }
  }
}

// Heartbeats and health until SIGINT or SIGTERM, then a clean shutdown.
void ServeUntilSignal(Scheduler& scheduler, WorkerService& service, grpc::Server& server,
                      HttpServer& http, const std::string& id, const std::string& bearer,
                      sigset_t sigs) {
  std::atomic<bool> stop{false};
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  std::thread beat([&] { HeartbeatLoop(stop, scheduler, service, health, id, bearer); });
  int sig = 0;
  sigwait(&sigs, &sig);
  log::Info("shutting down", {{"worker", id}, {"signal", std::to_string(sig)}});
  stop.store(true);
  beat.join();
  http.Stop();
  server.Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

// /metrics and /health on --http-listen, if given.
absl::Status ServeHttp(HttpServer& http, WorkerMetrics& metrics, WorkerService& service,
                       Scheduler& scheduler, const SessionManager& sessions,
                       const std::string& id) {
  const std::string listen = absl::GetFlag(FLAGS_http_listen);
  if (listen.empty()) return absl::OkStatus();
  http.ServeMetrics({metrics.registry()},
                    [&] { metrics.Refresh(service.Status(), sessions.StateMoves()); });
  http.ServeHealth([&scheduler] {
    return scheduler.Healthy() ? std::string() : std::string("the scheduler makes no progress");
  });
  RSD_ASSIGN_OR_RETURN(int port, http.Start(listen));
  std::printf("rsd-worker %s serving HTTP on port %d\n", id.c_str(), port);
  return absl::OkStatus();
}

// --tls-peers as a list; INVALID_ARGUMENT naming a pattern with a wildcard other than a leading
// "*." (which would match nothing).
absl::StatusOr<std::vector<std::string>> TlsPeers() {
  std::vector<std::string> out;
  for (absl::string_view p : absl::StrSplit(absl::GetFlag(FLAGS_tls_peers), ',')) {
    const std::string pattern(absl::StripAsciiWhitespace(p));
    if (pattern.empty()) continue;
    const size_t star = pattern.find('*');
    if (star != std::string::npos && (star != 0 || pattern.size() < 3 || pattern[1] != '.' ||
                                      pattern.find('*', 1) != pattern.npos)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls-peers: '", pattern, "' (a wildcard only as a whole leading label: '*.domain')"));
    }
    out.push_back(pattern);
  }
  return out;
}

// The flags checked before anything starts.
absl::Status CheckFlags() {
  if (absl::GetFlag(FLAGS_model).empty()) return absl::InvalidArgumentError("--model is required");
  if (absl::GetFlag(FLAGS_data_dir).empty()) {
    return absl::InvalidArgumentError("--data-dir is required");
  }
  const TlsFiles tls = TlsFromFlags();
  RSD_RETURN_IF_ERROR(CheckTlsFiles(tls, /*server=*/true));
  RSD_ASSIGN_OR_RETURN(const std::vector<std::string> peers, TlsPeers());
  if (!peers.empty() && !tls.server()) {
    return absl::InvalidArgumentError("--tls-peers needs --tls-cert, --tls-key and --tls-ca");
  }
  if (tls.server() && !tls.client()) {
    return absl::InvalidArgumentError(
        "--tls-cert on a worker needs --tls-ca (mutual TLS: only the router and peer workers "
        "may call it)");
  }
  // The Worker port is mutual TLS with certificates; /metrics and /health stay plaintext.
  if (tls.server()) {
    return CheckListenFlags(absl::GetFlag(FLAGS_insecure_listen),
                            {{"--http-listen", absl::GetFlag(FLAGS_http_listen)}});
  }
  return CheckListenFlags(absl::GetFlag(FLAGS_insecure_listen),
                          {{"--listen", absl::GetFlag(FLAGS_listen)},
                           {"--http-listen", absl::GetFlag(FLAGS_http_listen)}});
}

// The Worker port's credentials: mutual TLS with --tls-ca (callers limited by --tls-peers), or
// plaintext.
std::shared_ptr<grpc::ServerCredentials> WorkerPortCredentials(const std::string& id) {
  std::shared_ptr<grpc::ServerCredentials> creds =
      ServerCredentialsFor(TlsFromFlags(), ClientCerts::kRequire);
  const std::vector<std::string> peers = *TlsPeers();  // checked by CheckFlags
  LimitCallers(*creds, peers,
               absl::StrCat("worker '", id, "' answers only the router and peer workers"));
  if (!peers.empty()) {
    log::Info("the Worker service answers only certificates naming",
              {{"worker", id}, {"tls_peers", absl::StrJoin(peers, ",")}});
  } else if (TlsFromFlags().server()) {
    log::Warn(
        "any certificate --tls-ca signed may call the Worker service (--tls-peers limits "
        "it to the router and peer workers)",
        {{"worker", id}});
  }
  return creds;
}

int Main() {
  if (absl::Status s = CheckFlags(); !s.ok()) return Fail(std::string(s.message()));
  const std::string model = absl::GetFlag(FLAGS_model);
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  const absl::StatusOr<std::string> api_key = LoadApiKey(absl::GetFlag(FLAGS_api_key_file));
  if (!api_key.ok()) return Fail(std::string(api_key.status().message()));

  // Signals are taken by one thread (sigwait), so block them before any thread starts.
  const sigset_t sigs = BlockStopSignals();

  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(EngineOptionsFromFlags(model));
  if (!engine.ok()) return Fail(engine.status().ToString());
  SessionManagerOptions so;
  so.data_dir = data_dir;
  so.warm_budget_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_warm_bytes));
  so.prefix_reuse = absl::GetFlag(FLAGS_prefix_reuse);
  so.prefix_cache_entries = std::max(0, absl::GetFlag(FLAGS_prefix_cache_entries));
  absl::StatusOr<std::unique_ptr<SessionManager>> sessions =
      SessionManager::Create(engine->get(), so);
  if (!sessions.ok()) return Fail(sessions.status().ToString());
  Scheduler scheduler(engine->get(), sessions->get(), SchedulerOptionsFromFlags());

  const std::string listen = absl::GetFlag(FLAGS_listen);
  // The router is told this address and id before the port is bound, so the port is explicit.
  if (listen.size() >= 2 && listen.substr(listen.size() - 2) == ":0") {
    return Fail("--listen needs an explicit port");
  }
  const WorkerServiceOptions wo = ServiceOptionsFromFlags(model, listen);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, WorkerPortCredentials(wo.id), &port);
  // Room for the largest message plus framing; a larger one is refused by gRPC itself.
  builder.SetMaxReceiveMessageSize(static_cast<int>(wo.max_message_bytes) + (1 << 20));
  builder.SetMaxSendMessageSize(16 << 20);
  WorkerService service(engine->get(), sessions->get(), &scheduler, wo);
  service.MeasureRates();
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fail(absl::StrCat("cannot listen on ", listen, " (address in use or invalid)"));
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  WorkerMetrics metrics;
  service.set_metrics(&metrics);
  HttpServer http;
  if (absl::Status s = ServeHttp(http, metrics, service, scheduler, **sessions, wo.id); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  std::printf("rsd-worker %s listening on %s (model %s, %s, data dir %s)\n", wo.id.c_str(),
              wo.address.c_str(), wo.model_name.c_str(), (*engine)->backend().name().c_str(),
              data_dir.c_str());
  std::fflush(stdout);
  ServeUntilSignal(scheduler, service, *server, http, wo.id, BearerOf(*api_key), sigs);
  return 0;
}

}  // namespace
}  // namespace rsd

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  rsd::SkipMutexDeadlockChecks();
  absl::SetProgramUsageMessage(
      "rsd-worker --model PATH --listen ADDR --router ADDR --data-dir DIR --id NAME [flags]: runs "
      "the\n"
      "model, keeps sessions hot, warm (host memory) and cold (RocksDB), serves rsd.v1.Worker and\n"
      "with --http-listen /health and /metrics");
  std::vector<char*> rest = rsd::ParseDashedCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::fprintf(stderr, "rsd-worker: unexpected argument '%s'\n", rest[1]);
    return 2;
  }
  if (absl::Status s = rsd::log::Init("rsd-worker", absl::GetFlag(FLAGS_log_format),
                                      absl::GetFlag(FLAGS_log_level));
      !s.ok()) {
    std::fprintf(stderr, "rsd-worker: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  return rsd::Main();
}
