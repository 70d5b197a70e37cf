// rsdctl's worker and model commands: workers, models, cordon, uncordon, drain, failover, migrate.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "tools/rsdctl/commands.h"
#include "tools/rsdctl/progress.h"

namespace rsd::ctl {
namespace {

json WorkerJson(const v1::WorkerInfo& w) {
  const v1::WorkerLoad& l = w.load();
  return {{"id", w.id()},
          {"address", w.address()},
          {"model", w.model()},
          {"model_fingerprint", w.model_fingerprint()},
          {"numerics_fingerprint", w.numerics_fingerprint()},
          {"state", w.state()},
          {"device",
           {{"kind", w.device().kind()},
            {"name", w.device().name()},
            {"index", w.device().index()},
            {"memory_total", w.device().memory_total()},
            {"memory_limit", w.device().memory_limit()},
            {"memory_used", w.device().memory_used()},
            {"memory_bandwidth", w.device().memory_bandwidth()}}},
          {"seconds_since_heartbeat", w.seconds_since_heartbeat()},
          {"sessions", w.sessions()},
          {"shared_bytes", l.shared_bytes()},
          {"saved_bytes", l.saved_bytes()},
          {"cold_bytes", l.cold_bytes()},
          {"cold_saved_bytes", l.cold_saved_bytes()},
          {"load",
           {{"hot_bytes_total", l.hot_bytes_total()},
            {"hot_bytes_free", l.hot_bytes_free()},
            {"warm_bytes_total", l.warm_bytes_total()},
            {"warm_bytes_free", l.warm_bytes_free()},
            {"queue_depth", l.queue_depth()},
            {"running", l.running()},
            {"sessions", l.sessions()},
            {"queue_limit", l.queue_limit()}}}};
}

std::vector<std::string> WorkerRow(const v1::WorkerInfo& w) {
  const std::string device =
      w.device().kind() == "cuda" ? absl::StrCat("cuda:", w.device().index()) : w.device().kind();
  return {w.id(),
          w.address(),
          w.model(),
          device,
          w.state(),
          absl::StrCat(w.sessions()),
          absl::StrFormat("%.1f", w.seconds_since_heartbeat()),
          absl::StrCat(Bytes(w.load().hot_bytes_free()), "/", Bytes(w.load().hot_bytes_total())),
          absl::StrCat(Bytes(w.load().warm_bytes_free()), "/", Bytes(w.load().warm_bytes_total())),
          absl::StrCat(w.load().queue_depth(), "+", w.load().running())};
}
const std::vector<std::string> kWorkerHeader = {
    "ID",       "ADDRESS",  "MODEL",    "DEVICE",    "STATE",
    "SESSIONS", "HB_AGE_S", "HOT_FREE", "WARM_FREE", "QUEUED+RUNNING"};

void PrintWorker(const Cli& cli, const v1::WorkerInfo& w) {
  if (cli.json) return PrintJson(WorkerJson(w));
  PrintTable({kWorkerHeader, WorkerRow(w)});
}

json MoveJson(const v1::MigrateResponse& m) {
  return {{"session", m.session().session_id()},
          {"from", m.from_worker()},
          {"from_epoch", m.from_epoch()},
          {"to", m.session().worker()},
          {"epoch", m.session().epoch()},
          {"form", m.form()},
          {"note", m.note()},
          {"blocks", m.blocks()},
          {"bytes",
           {{"payload", m.payload_bytes()},
            {"framing", m.framing_bytes()},
            {"tokens", m.token_bytes()},
            {"wire", m.wire_bytes()}}},
          {"shared_tokens", m.shared_tokens()},
          {"route", m.route()},
          {"seconds", m.seconds()}};
}

const std::vector<std::string> kMoveHeader = {"SESSION", "FROM",    "TO",      "EPOCH",  "FORM",
                                              "ROUTE",   "PAYLOAD", "FRAMING", "TOKENS", "WIRE",
                                              "SECONDS", "WIRE/S",  "NOTE"};

std::vector<std::string> MoveRow(const v1::MigrateResponse& m) {
  return {m.session().session_id(),
          m.from_worker(),
          m.session().worker(),
          absl::StrCat(m.from_epoch(), "->", m.session().epoch()),
          m.form(),
          m.route(),
          Bytes(m.payload_bytes()),
          Bytes(m.framing_bytes()),
          Bytes(m.token_bytes()),
          Bytes(m.wire_bytes()),
          absl::StrFormat("%.3f", m.seconds()),
          m.seconds() > 0 ? Bytes(static_cast<int64_t>(m.wire_bytes() / m.seconds())) : "-",
          m.note()};
}

// drain / failover: the worker, then every session moved.
void PrintMoves(const Cli& cli, const v1::WorkerInfo& w,
                const google::protobuf::RepeatedPtrField<v1::MigrateResponse>& moved) {
  if (cli.json) {
    json list = json::array();
    for (const v1::MigrateResponse& m : moved) list.push_back(MoveJson(m));
    PrintJson({{"worker", WorkerJson(w)}, {"moved", list}});
    return;
  }
  PrintTable({kWorkerHeader, WorkerRow(w)});
  std::printf("\n%d sessions moved\n", moved.size());
  if (moved.empty()) return;
  std::vector<std::vector<std::string>> rows = {kMoveHeader};
  for (const v1::MigrateResponse& m : moved) rows.push_back(MoveRow(m));
  PrintTable(rows);
}

}  // namespace

int Workers(Cli& cli, const Args& a) {
  if (!a.positional.empty()) Usage("'workers' takes no arguments");
  v1::ListWorkersResponse resp;
  grpc::Status s = cli.admin->ListWorkers(cli.Context().get(), v1::ListWorkersRequest(), &resp);
  if (!s.ok()) return Report(s, cli.router);
  if (cli.json) {
    json list = json::array();
    for (const v1::WorkerInfo& w : resp.workers()) list.push_back(WorkerJson(w));
    PrintJson({{"workers", list}});
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {kWorkerHeader};
  if (cli.wide) {
    for (const char* extra : {"DEVICE_NAME", "NUMERICS_FP", "MODEL_FP"}) rows[0].push_back(extra);
  }
  for (const v1::WorkerInfo& w : resp.workers()) {
    rows.push_back(WorkerRow(w));
    if (cli.wide) {
      rows.back().push_back(w.device().name().empty() ? "-" : w.device().name());
      rows.back().push_back(w.numerics_fingerprint());
      rows.back().push_back(w.model_fingerprint());
    }
  }
  PrintTable(rows);
  return 0;
}

int Models(Cli& cli, const Args& a) {
  if (!a.positional.empty()) Usage("'models' takes no arguments");
  v1::ListModelsResponse resp;
  grpc::Status s = cli.client->ListModels(cli.Context().get(), v1::ListModelsRequest(), &resp);
  if (!s.ok()) return Report(s, cli.router);
  if (cli.json) {
    json list = json::array();
    for (const v1::ModelInfo& m : resp.models()) {
      list.push_back(
          {{"name", m.name()},
           {"fingerprint", m.fingerprint()},
           {"context_length", m.context_length()},
           {"workers", std::vector<std::string>(m.workers().begin(), m.workers().end())}});
    }
    PrintJson({{"models", list}});
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {{"MODEL", "CONTEXT", "FINGERPRINT", "WORKERS"}};
  for (const v1::ModelInfo& m : resp.models()) {
    rows.push_back({m.name(), absl::StrCat(m.context_length()), m.fingerprint(),
                    absl::StrJoin(m.workers(), ",")});
  }
  PrintTable(rows);
  return 0;
}

int WorkerCommand(Cli& cli, const Args& a) {
  v1::WorkerRequest req;
  req.set_worker(Target(a, "worker", "worker id"));
  // Drain and failover move sessions one by one: longer than a plain call.
  if (!cli.timeout_s_set && (a.command == "drain" || a.command == "failover")) {
    cli.timeout_s = 600;
  }
  grpc::Status s;
  auto ctx = cli.Context();
  if (a.command == "drain" || a.command == "failover") {
    v1::DrainResponse drained;
    v1::FailoverResponse failed_over;
    const std::string worker = req.worker();
    s = WithProgress(
        cli, absl::StrCat(a.command, " ", worker), [&] { return SessionsOn(cli, worker); },
        [&] {
          return a.command == "drain" ? cli.admin->Drain(ctx.get(), req, &drained)
                                      : cli.admin->Failover(ctx.get(), req, &failed_over);
        });
    if (!s.ok()) return Report(s, cli.router);
    if (a.command == "drain") {
      PrintMoves(cli, drained.worker(), drained.moved());
    } else {
      PrintMoves(cli, failed_over.worker(), failed_over.moved());
    }
    return 0;
  }
  v1::WorkerInfo info;
  if (a.command == "cordon") s = cli.admin->Cordon(ctx.get(), req, &info);
  if (a.command == "uncordon") s = cli.admin->Uncordon(ctx.get(), req, &info);
  if (!s.ok()) return Report(s, cli.router);
  PrintWorker(cli, info);
  return 0;
}

int Migrate(Cli& cli, const Args& a) {
  v1::MigrateRequest req;
  req.set_session_id(Target(a, "session", "session id"));
  if (!a.Has("to")) Usage("'migrate' needs --to WORKER");
  req.set_to_worker(a.Get("to"));
  req.set_form(a.Get("form"));
  if (!cli.timeout_s_set) cli.timeout_s = 300;
  v1::MigrateResponse resp;
  auto ctx = cli.Context();
  grpc::Status s = WithProgress(
      cli, absl::StrCat("migrate ", req.session_id(), " to ", req.to_worker()),
      [] { return MoveSample(); }, [&] { return cli.admin->Migrate(ctx.get(), req, &resp); });
  if (!s.ok()) return Report(s, cli.router);
  if (cli.json) {
    PrintJson(MoveJson(resp));
    return 0;
  }
  PrintTable({kMoveHeader, MoveRow(resp)});
  return 0;
}

}  // namespace rsd::ctl
