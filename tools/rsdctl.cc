// rsdctl: the admin and client CLI of a Residuum cluster (DESIGN.md section 7).
//
//   rsdctl [--router ADDR] [-o json|table] [--tenant T] [--timeout S] <command> [flags]
//
// Flags may come before or after the command. Exit status: 0 on success, 1 on an RPC error
// (stderr: "rsdctl: <CODE>: <message>"), 2 on a usage error.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "rsd/v1/admin.grpc.pb.h"
#include "rsd/v1/client.grpc.pb.h"

namespace {

// Keys print in the order written (session first), which reads better than sorted.
using json = nlohmann::ordered_json;
namespace v1 = rsd::v1;

constexpr char kUsage[] =
    "usage: rsdctl [--router ADDR] [-o json|table] [--tenant T] [--timeout S] <command> ...\n"
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
    "The router defaults to $RSD_ROUTER or 127.0.0.1:50051; --timeout defaults to 600 s for chat,\n"
    "drain and failover, 300 s for migrate, 30 s otherwise.\n";

// A usage error: message, usage, exit 2.
[[noreturn]] void Usage(const std::string& msg) {
  std::fprintf(stderr, "rsdctl: %s (rsdctl help: usage)\n", msg.c_str());
  std::exit(2);
}

// ---- Command line ----------------------------------------------------------------------------

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

const std::set<std::string> kBoolFlags = {"pin", "json", "help"};
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
};
const std::set<std::string> kGlobalFlags = {"router", "o", "output", "json", "tenant", "timeout",
                                            "help"};

bool KnownAnywhere(const std::string& name) {
  if (kGlobalFlags.count(name)) return true;
  for (const auto& [command, flags] : kCommandFlags) {
    if (flags.count(name)) return true;
  }
  return false;
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
    if (kBoolFlags.count(name)) {
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
    std::fputs(kUsage, stdout);
    std::exit(0);
  }
  return a;
}

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
std::string Target(const Args& a, const std::string& flag, const std::string& what) {
  if (a.positional.size() > 1) {
    Usage(absl::StrCat("'", a.command, "' takes one ", what, ", got ", a.positional.size()));
  }
  if (!a.positional.empty()) return a.positional[0];
  if (a.Has(flag)) return a.Get(flag);
  Usage(absl::StrCat("'", a.command, "' needs a ", what));
}

// ---- RPC plumbing ----------------------------------------------------------------------------

const char* CodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

// Prints the RPC error; returns the exit status (0 if OK).
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

struct Cli {
  std::string router;
  bool json = false;
  std::string tenant;
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
    return ctx;
  }
};

std::string Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}
void PrintJson(const json& j) {
  std::fputs(Dump(j).c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

// Rows of columns, aligned.
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

// ---- Sessions --------------------------------------------------------------------------------

json SessionJson(const v1::SessionInfo& s) {
  return {{"session", s.session_id()},
          {"tenant", s.tenant()},
          {"model", s.model()},
          {"worker", s.worker()},
          {"epoch", s.epoch()},
          {"turns", s.turns()},
          {"token_count", s.token_count()},
          {"bytes", {{"hot", s.bytes().hot()}, {"warm", s.bytes().warm()}, {"cold", s.bytes().cold()}}},
          {"options",
           {{"ttl_seconds", s.options().ttl_seconds()},
            {"pin", s.options().pin()},
            {"priority", s.options().priority()}}},
          {"state", s.state()},
          {"idle_seconds", s.idle_seconds()}};
}

void PrintSession(const Cli& cli, const v1::SessionInfo& s) {
  if (cli.json) return PrintJson(SessionJson(s));
  PrintTable({{"session", s.session_id()},
              {"tenant", s.tenant()},
              {"model", s.model()},
              {"worker", s.worker()},
              {"epoch", absl::StrCat(s.epoch())},
              {"turns", absl::StrCat(s.turns())},
              {"token_count", absl::StrCat(s.token_count())},
              {"bytes", absl::StrCat("hot ", Bytes(s.bytes().hot()), ", warm ", Bytes(s.bytes().warm()),
                                     ", cold ", Bytes(s.bytes().cold()))},
              {"state", s.state()},
              {"idle_seconds", absl::StrFormat("%.1f", s.idle_seconds())}});
}

int Create(Cli& cli, const Args& a) {
  if (!a.positional.empty()) Usage("'create' takes no positional arguments");
  v1::CreateSessionRequest req;
  req.set_model(a.Get("model"));
  if (auto ttl = NumberFlag<uint32_t>(a, "ttl")) req.mutable_options()->set_ttl_seconds(*ttl);
  req.mutable_options()->set_pin(a.Get("pin") == "true");
  if (auto p = NumberFlag<int32_t>(a, "priority")) req.mutable_options()->set_priority(*p);
  v1::SessionInfo info;
  grpc::Status s = cli.client->CreateSession(cli.Context().get(), req, &info);
  if (!s.ok()) return Report(s, cli.router);
  if (cli.json) {
    json j = SessionJson(info);
    PrintJson(j);
  } else {
    PrintTable({{"session", info.session_id()}, {"worker", info.worker()}, {"model", info.model()}});
  }
  return 0;
}

int SessionCall(Cli& cli, const Args& a) {
  v1::SessionRequest req;
  req.set_session_id(Target(a, "session", "session id"));
  grpc::Status s;
  if (a.command == "close") {
    v1::CloseSessionResponse resp;
    s = cli.client->CloseSession(cli.Context().get(), req, &resp);
    if (s.ok()) {
      if (cli.json) {
        PrintJson({{"session", req.session_id()}, {"closed", true}});
      } else {
        std::printf("closed %s\n", req.session_id().c_str());
      }
    }
    return Report(s, cli.router);
  }
  v1::SessionInfo info;
  if (a.command == "undo") {
    s = cli.client->UndoTurn(cli.Context().get(), req, &info);
  } else {
    v1::DescribeSessionRequest dreq;
    dreq.set_session_id(req.session_id());
    // The client view (tenant-checked) when a tenant is given; otherwise the admin view.
    s = cli.tenant.empty() ? cli.admin->DescribeSession(cli.Context().get(), dreq, &info)
                           : cli.client->GetSession(cli.Context().get(), req, &info);
  }
  if (!s.ok()) return Report(s, cli.router);
  PrintSession(cli, info);
  return 0;
}

int Sessions(Cli& cli, const Args& a) {
  v1::ListSessionsRequest req;
  req.set_worker(a.Get("worker"));
  v1::ListSessionsResponse resp;
  grpc::Status s = cli.admin->ListSessions(cli.Context().get(), req, &resp);
  if (!s.ok()) return Report(s, cli.router);
  if (cli.json) {
    json list = json::array();
    for (const v1::SessionInfo& i : resp.sessions()) list.push_back(SessionJson(i));
    PrintJson({{"sessions", list}});
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {
      {"SESSION", "TENANT", "MODEL", "WORKER", "EPOCH", "TURNS", "TOKENS", "IDLE_S"}};
  for (const v1::SessionInfo& i : resp.sessions()) {
    rows.push_back({i.session_id(), i.tenant(), i.model(), i.worker(), absl::StrCat(i.epoch()),
                    absl::StrCat(i.turns()), absl::StrCat(i.token_count()),
                    absl::StrFormat("%.0f", i.idle_seconds())});
  }
  PrintTable(rows);
  return 0;
}

// ---- Chat ------------------------------------------------------------------------------------

struct TurnResult {
  v1::TurnDone done;
  std::vector<int32_t> tokens;
  std::string text;
};

// One turn. Table mode streams the text to stdout as it arrives.
grpc::Status RunTurn(Cli& cli, const v1::TurnRequest& req, TurnResult* out) {
  std::unique_ptr<grpc::ClientContext> ctx = cli.Context();
  std::unique_ptr<grpc::ClientReader<v1::ChatEvent>> reader = cli.client->Chat(ctx.get(), req);
  v1::ChatEvent ev;
  bool got_done = false;
  while (reader->Read(&ev)) {
    if (ev.has_delta()) {
      out->tokens.insert(out->tokens.end(), ev.delta().tokens().begin(), ev.delta().tokens().end());
      out->text += ev.delta().text();
      if (!cli.json) {
        std::fwrite(ev.delta().text().data(), 1, ev.delta().text().size(), stdout);
        std::fflush(stdout);
      }
    } else if (ev.has_done()) {
      out->done = ev.done();
      got_done = true;
    }
  }
  grpc::Status s = reader->Finish();
  if (s.ok() && !got_done) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "the turn stream ended without a TurnDone");
  }
  return s;
}

void PrintTurn(const Cli& cli, const std::string& session, const TurnResult& r) {
  const v1::TurnDone& d = r.done;
  // TurnDone carries every token; the streamed ones stand in if it does not.
  std::vector<int32_t> tokens(d.tokens().begin(), d.tokens().end());
  if (tokens.empty()) tokens = r.tokens;
  const std::string text = d.text().empty() ? r.text : d.text();
  if (cli.json) {
    PrintJson({{"session", session},
               {"worker", d.worker()},
               {"turn", d.turn()},
               {"tokens", tokens},
               {"text", text},
               {"finish_reason", d.finish_reason()},
               {"usage",
                {{"prompt_tokens", d.usage().prompt_tokens()},
                 {"completion_tokens", d.usage().completion_tokens()},
                 {"history_tokens", d.usage().history_tokens()}}},
               {"seed", d.seed()},
               {"replayed", d.replayed()},
               {"restored_from", d.restored_from()},
               {"queue_seconds", d.queue_seconds()},
               {"prefill_seconds", d.prefill_seconds()},
               {"decode_seconds", d.decode_seconds()}});
    return;
  }
  std::printf("\n");
  std::fflush(stdout);
  std::fprintf(stderr,
               "[turn %u on %s: %lld tokens, finish %s, history %lld tokens, seed %llu%s]\n",
               d.turn(), d.worker().c_str(), static_cast<long long>(tokens.size()),
               d.finish_reason().c_str(), static_cast<long long>(d.usage().history_tokens()),
               static_cast<unsigned long long>(d.seed()), d.replayed() ? ", replayed" : "");
}

v1::TurnRequest TurnTemplate(const Args& a, const std::string& session) {
  v1::TurnRequest req;
  req.set_session_id(session);
  if (auto n = NumberFlag<int32_t>(a, "max-tokens")) {
    if (*n < 0) Usage("--max-tokens must be >= 0");
    req.set_max_tokens(*n);
  }
  if (auto t = NumberFlag<float>(a, "temperature")) req.mutable_sampling()->set_temperature(*t);
  if (auto k = NumberFlag<int32_t>(a, "top-k")) req.mutable_sampling()->set_top_k(*k);
  if (auto p = NumberFlag<float>(a, "top-p")) req.mutable_sampling()->set_top_p(*p);
  if (auto s = NumberFlag<uint64_t>(a, "seed")) req.mutable_sampling()->set_seed(*s);
  if (a.Has("stop")) {
    for (const std::string& s : a.flags.at("stop")) req.add_stop(s);
  }
  return req;
}

// The user turns of a JSON Lines script ({"role": "user", "content": "..."}).
std::vector<std::string> ReadScript(const std::string& path) {
  std::ifstream in(path);
  if (!in) Usage(absl::StrCat("--script ", path, ": cannot open"));
  std::vector<std::string> turns;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("content") || !j["content"].is_string() ||
        j.value("role", "user") != "user") {
      Usage(absl::StrCat(path, ":", n, ": expected {\"role\": \"user\", \"content\": \"...\"}"));
    }
    turns.push_back(j["content"].get<std::string>());
  }
  if (turns.empty()) Usage(absl::StrCat("--script ", path, ": no turns"));
  return turns;
}

int Chat(Cli& cli, const Args& a) {
  if (!cli.timeout_s_set) cli.timeout_s = 600;
  std::string session = a.Has("session") ? a.Get("session") : "";
  if (session.empty() && a.positional.size() == 1) session = a.positional[0];
  if (session.empty()) Usage("'chat' needs --session ID");
  if (a.Has("message") && a.Has("script")) Usage("--message and --script exclude each other");
  const v1::TurnRequest base = TurnTemplate(a, session);
  const std::string turn_id = a.Get("turn-id");

  auto one = [&](const std::string& message, const std::string& id) -> int {
    v1::TurnRequest req = base;
    req.set_message(message);
    req.set_turn_id(id);
    TurnResult r;
    grpc::Status s = RunTurn(cli, req, &r);
    if (!s.ok()) {
      if (!cli.json && !r.text.empty()) std::printf("\n");
      return Report(s, cli.router);
    }
    PrintTurn(cli, session, r);
    return 0;
  };
  if (a.Has("message")) return one(a.Get("message"), turn_id);

  const bool script = a.Has("script");
  std::vector<std::string> turns;
  if (script) turns = ReadScript(a.Get("script"));
  const bool tty = !script && isatty(STDIN_FILENO);
  int status = 0;
  for (size_t n = 0;; ++n) {
    std::string message;
    if (script) {
      if (n >= turns.size()) break;
      message = turns[n];
    } else {
      if (tty) std::fprintf(stderr, "> ");
      if (!std::getline(std::cin, message)) break;
      if (message.empty()) continue;
    }
    const std::string id = turn_id.empty() ? "" : absl::StrCat(turn_id, "-", n + 1);
    status = one(message, id);
    if (status != 0 && script) return status;
  }
  return status;
}

// ---- Workers and models ----------------------------------------------------------------------

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
  for (const v1::WorkerInfo& w : resp.workers()) rows.push_back(WorkerRow(w));
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
      list.push_back({{"name", m.name()},
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
          {"seconds", m.seconds()}};
}

const std::vector<std::string> kMoveHeader = {"SESSION", "FROM", "TO",      "EPOCH",  "FORM",
                                              "PAYLOAD", "FRAMING", "TOKENS", "WIRE", "SECONDS",
                                              "NOTE"};

std::vector<std::string> MoveRow(const v1::MigrateResponse& m) {
  return {m.session().session_id(),
          m.from_worker(),
          m.session().worker(),
          absl::StrCat(m.from_epoch(), "->", m.session().epoch()),
          m.form(),
          Bytes(m.payload_bytes()),
          Bytes(m.framing_bytes()),
          Bytes(m.token_bytes()),
          Bytes(m.wire_bytes()),
          absl::StrFormat("%.3f", m.seconds()),
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
    if (a.command == "drain") {
      s = cli.admin->Drain(ctx.get(), req, &drained);
    } else {
      s = cli.admin->Failover(ctx.get(), req, &failed_over);
    }
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
  grpc::Status s = cli.admin->Migrate(cli.Context().get(), req, &resp);
  if (!s.ok()) return Report(s, cli.router);
  if (cli.json) {
    PrintJson(MoveJson(resp));
    return 0;
  }
  PrintTable({kMoveHeader, MoveRow(resp)});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = ParseArgs(argc, argv);
  Cli cli;
  const char* env = std::getenv("RSD_ROUTER");
  cli.router = a.Get("router", env != nullptr && *env != '\0' ? env : "127.0.0.1:50051");
  std::string output = a.Get("o", a.Get("output", "table"));
  if (a.Get("json") == "true") output = "json";
  if (output != "json" && output != "table") {
    Usage(absl::StrCat("-o: '", output, "' is not json or table"));
  }
  cli.json = output == "json";
  cli.tenant = a.Get("tenant");
  if (auto t = NumberFlag<double>(a, "timeout")) {
    if (!(*t > 0)) Usage("--timeout must be > 0 seconds");
    cli.timeout_s = *t;
    cli.timeout_s_set = true;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  cli.channel = grpc::CreateCustomChannel(cli.router, grpc::InsecureChannelCredentials(), args);
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
  return WorkerCommand(cli, a);
}
