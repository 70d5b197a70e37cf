#include "tests/cluster/cluster.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "storage/common/status.h"
#include "tests/support/test_util.h"

namespace rsd::testing {
namespace {

// A unary call with a deadline `seconds` away; its gRPC status as an absl one (the code kept).
template <typename Resp, typename Call>
absl::StatusOr<Resp> Unary(int seconds, Call call) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  Resp resp;
  const grpc::Status st = call(&ctx, &resp);
  if (!st.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
  }
  return resp;
}

}  // namespace

std::string BinDir() {
  // tools/gpu-check runs these tests from a pack of the binaries on another machine.
  const char* dir = std::getenv("RSD_BIN_DIR");
  return dir != nullptr && *dir != '\0' ? dir : RSD_BIN_DIR;
}

absl::StatusOr<std::unique_ptr<Cluster>> Cluster::Start(const std::string& model,
                                                        const std::vector<WorkerSpec>& workers,
                                                        std::vector<std::string> router_flags) {
  std::unique_ptr<Cluster> c(new Cluster());
  c->dir_ = MakeTempDir("rsd-cluster");
  c->router_address_ = absl::StrCat("127.0.0.1:", FreePort());
  std::vector<std::string> argv = {BinDir() + "/router/rsd-router", "--listen", c->router_address_,
                                   "--data-dir", c->dir_ + "/router"};
  argv.insert(argv.end(), router_flags.begin(), router_flags.end());
  auto router = Process::Start(argv, c->dir_ + "/router.log");
  if (!router.ok()) return router.status();
  c->router_ = std::move(router).value();
  c->router_argv_ = argv;
  auto channel = grpc::CreateChannel(c->router_address_, grpc::InsecureChannelCredentials());
  c->client_ = v1::Client::NewStub(channel);
  c->admin_ = v1::Admin::NewStub(channel);
  for (const WorkerSpec& w : workers) {
    absl::Status st = c->Launch(model, w);
    if (!st.ok()) return st;
  }
  std::vector<std::string> ids;
  for (const WorkerSpec& w : workers) ids.push_back(w.id);
  absl::Status st = c->WaitReady(ids, 60);
  if (!st.ok()) return st;
  return c;
}

absl::Status Cluster::Launch(const std::string& model, const WorkerSpec& w) {
  const std::string address = absl::StrCat("127.0.0.1:", FreePort());
  std::vector<std::string> wargv = {BinDir() + "/worker/rsd-worker", "--model", model,
                                    "--listen", address, "--router", router_address_,
                                    "--data-dir", dir_ + "/" + w.id, "--id", w.id,
                                    "--threads", "1"};
  wargv.insert(wargv.end(), w.flags.begin(), w.flags.end());
  auto p = Process::Start(wargv, dir_ + "/" + w.id + ".log");
  if (!p.ok()) return p.status();
  workers_[w.id] = std::move(p).value();
  worker_argv_[w.id] = wargv;
  worker_stubs_[w.id] =
      v1::Worker::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  return absl::OkStatus();
}

absl::Status Cluster::WaitReady(const std::vector<std::string>& ids, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ListWorkersResponse resp;
    grpc::Status st = admin_->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp);
    size_t ready = 0;
    if (st.ok()) {
      for (const auto& w : resp.workers()) {
        ready += w.state() == "ready" && std::find(ids.begin(), ids.end(), w.id()) != ids.end();
      }
    }
    if (ready == ids.size()) return absl::OkStatus();
    if (std::chrono::steady_clock::now() > end) {
      return absl::DeadlineExceededError(absl::StrCat("workers did not register in ", seconds,
                                                      " s:\n", Logs()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

absl::Status Cluster::AddWorker(const std::string& model, const WorkerSpec& spec) {
  RSD_RETURN_IF_ERROR(Launch(model, spec));
  return WaitReady({spec.id}, 60);
}

absl::Status Cluster::RestartWorker(const std::string& id) {
  auto it = worker_argv_.find(id);
  if (it == worker_argv_.end()) return absl::NotFoundError(id);
  workers_[id].Stop();
  auto p = Process::Start(it->second, dir_ + "/" + id + ".log");
  if (!p.ok()) return p.status();
  workers_[id] = std::move(p).value();
  // The router may still list the killed process as ready (its heartbeat timeout has not run
  // out): wait until the new process answers on its port (a fresh channel: the old one may be
  // waiting out its reconnect backoff), then until it is registered and ready.
  const std::string& address =
      it->second[std::find(it->second.begin(), it->second.end(), std::string("--listen")) -
                 it->second.begin() + 1];
  worker_stubs_[id] =
      v1::Worker::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!WorkerStatus(id).ok()) {
    if (std::chrono::steady_clock::now() > end || !workers_[id].running()) {
      return absl::DeadlineExceededError(
          absl::StrCat("worker ", id, " did not restart:\n", Logs()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return WaitReady({id}, 60);
}

absl::Status Cluster::RestartRouter() {
  router_.Stop();
  auto p = Process::Start(router_argv_, dir_ + "/router.log");
  if (!p.ok()) return p.status();
  router_ = std::move(p).value();
  std::vector<std::string> ids;
  for (const auto& [id, argv] : worker_argv_) ids.push_back(id);
  return WaitReady(ids, 60);
}

std::string ScriptMessage(int s, int t) {
  static const char* kMessages[] = {"Hi!",
                                    "What is a cat?",
                                    "Name a color.",
                                    "Tell me a joke.",
                                    "What is 2+2?",
                                    "Say something nice.",
                                    "Where is Paris?",
                                    "Why is the sky blue?",
                                    "Count to three.",
                                    "What do dogs eat?",
                                    "Give me a word.",
                                    "Thanks!"};
  return kMessages[(s * 5 + t * 7) % 12];
}

absl::StatusOr<v1::SessionInfo> DescribeSession(Cluster& c, const std::string& session) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::DescribeSessionRequest req;
  req.set_session_id(session);
  v1::SessionInfo info;
  grpc::Status st = c.admin().DescribeSession(&ctx, req, &info);
  if (!st.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
  }
  return info;
}

std::vector<v1::SessionInfo> HeldSessions(Cluster& c, const std::string& worker) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::WorkerListSessionsResponse resp;
  grpc::Status st = c.worker(worker).ListSessions(&ctx, v1::WorkerListSessionsRequest(), &resp);
  if (!st.ok()) return {};
  return {resp.sessions().begin(), resp.sessions().end()};
}

Cluster::~Cluster() {
  for (auto& [id, p] : workers_) p.Stop();
  router_.Stop();
}

std::string Cluster::Logs() {
  std::string out = "--- router\n" + router_.Log();
  for (auto& [id, p] : workers_) out += "--- " + id + "\n" + p.Log();
  return out;
}

absl::StatusOr<v1::WorkerStatus> Cluster::WorkerStatus(const std::string& id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::WorkerStatus st;
  grpc::Status s = worker(id).GetStatus(&ctx, v1::WorkerStatusRequest(), &st);
  if (!s.ok()) return absl::UnavailableError(s.error_message());
  return st;
}

absl::Status Cluster::Cordon(const std::string& id, bool on) {
  grpc::ClientContext ctx;
  v1::WorkerRequest req;
  req.set_worker(id);
  v1::WorkerInfo info;
  grpc::Status s = on ? admin_->Cordon(&ctx, req, &info) : admin_->Uncordon(&ctx, req, &info);
  if (!s.ok()) return absl::InternalError(s.error_message());
  return absl::OkStatus();
}

absl::StatusOr<v1::DrainResponse> Cluster::Drain(const std::string& id) {
  v1::WorkerRequest req;
  req.set_worker(id);
  return Unary<v1::DrainResponse>(180, [&](grpc::ClientContext* ctx, v1::DrainResponse* resp) {
    return admin_->Drain(ctx, req, resp);
  });
}

absl::StatusOr<v1::SessionInfo> Cluster::Create(const std::string& model) {
  v1::CreateSessionRequest req;
  req.set_model(model);
  return Unary<v1::SessionInfo>(30, [&](grpc::ClientContext* ctx, v1::SessionInfo* info) {
    return client_->CreateSession(ctx, req, info);
  });
}

absl::StatusOr<v1::MigrateResponse> Cluster::Migrate(const std::string& session,
                                                     const std::string& to,
                                                     const std::string& form) {
  v1::MigrateRequest req;
  req.set_session_id(session);
  req.set_to_worker(to);
  req.set_form(form);
  return Unary<v1::MigrateResponse>(120, [&](grpc::ClientContext* ctx, v1::MigrateResponse* resp) {
    return admin_->Migrate(ctx, req, resp);
  });
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5)];
}

ChatOutcome Chat(v1::Client::Stub& client, const v1::TurnRequest& request,
                 double timeout_seconds) {
  ChatOutcome o;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000)));
  auto reader = client.Chat(&ctx, request);
  v1::ChatEvent ev;
  bool done = false;
  while (reader->Read(&ev)) {
    if (done) {
      o.status = grpc::Status(grpc::StatusCode::INTERNAL, "a message after TurnDone");
      break;
    }
    if (ev.has_delta()) {
      const auto& d = ev.delta();
      if (d.offset() != static_cast<int64_t>(o.tokens.size()) ||
          d.text_offset() != static_cast<int64_t>(o.text.size())) {
        o.status = grpc::Status(grpc::StatusCode::INTERNAL,
                                absl::StrCat("delta at offset ", d.offset(), "/", d.text_offset(),
                                             ", expected ", o.tokens.size(), "/", o.text.size()));
      }
      o.tokens.insert(o.tokens.end(), d.tokens().begin(), d.tokens().end());
      o.text += d.text();
      o.deltas++;
    } else if (ev.has_done()) {
      o.done = ev.done();
      done = true;
    }
  }
  grpc::Status st = reader->Finish();
  if (o.status.ok()) o.status = st;
  if (o.status.ok() && !done) o.status = grpc::Status(grpc::StatusCode::INTERNAL, "no TurnDone");
  if (o.status.ok() &&
      std::vector<int32_t>(o.done.tokens().begin(), o.done.tokens().end()) != o.tokens) {
    o.status = grpc::Status(grpc::StatusCode::INTERNAL, "deltas differ from TurnDone's tokens");
  }
  return o;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> RsdRunChat(
    const std::string& model, const std::vector<std::string>& messages, int max_tokens,
    float temperature, int top_k, uint64_t seed) {
  const std::string dir = MakeTempDir("rsd-run-chat");
  const std::string script = dir + "/script.jsonl";
  {
    std::ofstream out(script);
    for (const std::string& m : messages) {
      out << nlohmann::json{{"role", "user"}, {"content", m}}.dump() << "\n";
    }
  }
  auto out = RunCommand({BinDir() + "/tools/rsd-run", "chat", "--model", model, "--script", script,
                         "--threads", "1", "--max-tokens", std::to_string(max_tokens),
                         "--temperature", std::to_string(temperature), "--top-k",
                         std::to_string(top_k), "--seed", std::to_string(seed)});
  if (!out.ok()) return out.status();
  std::vector<std::vector<int32_t>> turns;
  std::istringstream lines(*out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("tokens")) continue;
    turns.push_back(j["tokens"].get<std::vector<int32_t>>());
  }
  if (turns.size() != messages.size()) {
    return absl::InternalError(absl::StrCat("rsd-run chat printed ", turns.size(), " turns for ",
                                            messages.size(), " messages:\n", *out));
  }
  return turns;
}

}  // namespace rsd::testing
