// rsd-serving-bench: N client threads, each one chat session of T turns of M tokens (greedy, or
// sampled with --temperature), against our router (rsd.v1.Client: CreateSession, then Chat
// streaming) or llama.cpp's llama-server (POST /v1/chat/completions, streamed, the full history
// each turn, "cache_prompt"). Prints throughput, TTFT and ITL percentiles and appends a CSV row;
// --report prints a CSV's table with the ratio ours / llama-server per N. Printed, not asserted.
//
// Definitions (the same for both systems):
//   TTFT        request sent -> first streamed event that carries a token.
//   ITL         gap between consecutive token-carrying events within a turn; an event carrying k
//               tokens contributes k gaps of gap / k (per-token latency, not per-message).
//   throughput  all generated tokens of the run / wall time from the moment every session exists
//               to the end of the last turn. Tokens are those actually generated: our turns may
//               end early at EOS (the proto has no ignore-EOS), llama-server's ignore EOS.

#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/barrier.h"
#include "nlohmann/json.hpp"
#include "rsd/v1/admin.grpc.pb.h"
#include "rsd/v1/client.grpc.pb.h"
#include "rsd/v1/worker.grpc.pb.h"
#include "storage/common/flags.h"
#include "tools/bench/serving_clients.h"

ABSL_FLAG(std::string, system, "rsd",
          "rsd (our router over gRPC), rsd-worker (a worker's own gRPC service, no router: what "
          "the router hop costs), rsd-http (our router's OpenAI HTTP API with server-side "
          "sessions) or llama (llama-server)");
ABSL_FLAG(std::string, target, "127.0.0.1:50051",
          "router host:port (rsd, rsd-http), worker host:port (rsd-worker) or llama-server's");
ABSL_FLAG(int, concurrency, 1, "concurrent sessions N (one client thread each)");
ABSL_FLAG(int, turns, 3, "turns per session");
ABSL_FLAG(int, max_tokens, 32, "tokens generated per turn");
ABSL_FLAG(double, temperature, 0,
          "sampling temperature of every system (0: greedy; else seeded "
          "with --top_p and no other cut: llama-server gets top_k 0, min_p 0)");
ABSL_FLAG(double, top_p, 1, "nucleus cut with --temperature (1: off)");
ABSL_FLAG(int, threads, 0, "compute threads of the server (recorded in the CSV only)");
ABSL_FLAG(std::string, csv, "", "append the result row to this CSV (header written if new)");
ABSL_FLAG(std::string, report, "", "print the side-by-side table of this CSV and exit");
ABSL_FLAG(double, turn_timeout, 600, "seconds one turn may take");
ABSL_FLAG(double, wait_ready, 120, "seconds to wait for the target to be ready (a worker "
          "registered and ready; llama-server's /health answering 200)");

namespace {

using rsd::bench::ChatClient;
using rsd::bench::Clock;
using rsd::bench::MakeClient;
using rsd::bench::TurnTrace;

std::string UserMessage(int session, int turn) {
  static const char* kMessages[] = {
      "Tell me a short story about a cat who learns to sail.",
      "Now tell me what the cat did on the second day.",
      "What is the capital of France, and what is it famous for?",
      "Give me three tips for writing clear code.",
  };
  std::string m = kMessages[turn % 4];
  // Distinct per session, so that no server can answer one session's prompt from another's.
  if (turn == 0) m = absl::StrCat("Hi, I am user ", session, ". ", m);
  return m;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double rank = p / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(rank);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (rank - static_cast<double>(lo));
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Row {
  std::string system;
  int n = 0, turns = 0, max_tokens = 0, threads = 0;
  int64_t turns_ok = 0, errors = 0, eos_turns = 0, tokens = 0;
  double wall_s = 0, tok_s = 0;
  double ttft[3] = {0, 0, 0}, itl[3] = {0, 0, 0};  // p50, p95, p99 in ms
};

const char kHeader[] =
    "system,n,turns,max_tokens,threads,turns_ok,errors,eos_turns,tokens,wall_s,tok_per_s,"
    "ttft_p50_ms,ttft_p95_ms,ttft_p99_ms,itl_p50_ms,itl_p95_ms,itl_p99_ms";

std::string CsvLine(const Row& r) {
  return absl::StrFormat("%s,%d,%d,%d,%d,%d,%d,%d,%d,%.3f,%.1f,%.1f,%.1f,%.1f,%.2f,%.2f,%.2f",
                         r.system, r.n, r.turns, r.max_tokens, r.threads, r.turns_ok, r.errors,
                         r.eos_turns, r.tokens, r.wall_s, r.tok_s, r.ttft[0], r.ttft[1],
                         r.ttft[2], r.itl[0], r.itl[1], r.itl[2]);
}

Row Summarize(const std::vector<std::vector<TurnTrace>>& traces, double wall_s) {
  Row r;
  std::vector<double> ttft, itl;
  std::map<std::string, int> errors;
  for (const auto& session : traces) {
    for (const TurnTrace& t : session) {
      if (!t.error.empty()) {
        r.errors++;
        errors[t.error]++;
        continue;
      }
      r.turns_ok++;
      r.tokens += t.tokens;
      r.eos_turns += t.finish == "eos";
      if (t.events.empty()) continue;
      ttft.push_back(Ms(t.events[0].first - t.sent));
      for (size_t i = 1; i < t.events.size(); ++i) {
        const int k = t.events[i].second;
        const double gap = Ms(t.events[i].first - t.events[i - 1].first) / k;
        for (int j = 0; j < k; ++j) itl.push_back(gap);
      }
    }
  }
  for (const auto& [e, count] : errors) std::cerr << count << "x " << e << "\n";
  const double ps[3] = {50, 95, 99};
  for (int i = 0; i < 3; ++i) {
    r.ttft[i] = Percentile(ttft, ps[i]);
    r.itl[i] = Percentile(itl, ps[i]);
  }
  r.wall_s = wall_s;
  r.tok_s = wall_s > 0 ? static_cast<double>(r.tokens) / wall_s : 0;
  return r;
}

rsd::bench::Sampling FlagSampling() {
  return {absl::GetFlag(FLAGS_temperature), absl::GetFlag(FLAGS_top_p)};
}

bool Ready(const std::string& system, const std::string& target) {
  if (system == "rsd-worker") {  // serving: its model loaded and its compute thread running
    auto worker =
        rsd::v1::Worker::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    rsd::v1::WorkerStatus st;
    return worker->GetStatus(&ctx, rsd::v1::WorkerStatusRequest(), &st).ok() && st.serving();
  }
  if (system == "llama") {
    httplib::Client http(target);
    http.set_connection_timeout(1, 0);
    auto res = http.Get("/health");
    return res && res->status == 200;
  }
  if (system == "rsd-http") {  // a worker has registered: the router lists its model
    httplib::Client http(target);
    http.set_connection_timeout(1, 0);
    auto res = http.Get("/v1/models");
    return res && res->status == 200 && res->body.find("\"id\"") != std::string::npos;
  }
  auto admin = rsd::v1::Admin::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  rsd::v1::ListWorkersResponse resp;
  if (!admin->ListWorkers(&ctx, rsd::v1::ListWorkersRequest(), &resp).ok()) return false;
  for (const auto& w : resp.workers()) {
    if (w.state() == "ready") return true;
  }
  return false;
}

bool WaitReady(const std::string& system, const std::string& target, double seconds) {
  const auto end = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(seconds * 1e3));
  while (!Ready(system, target)) {
    if (Clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return true;
}

// One warm-up turn on a session of its own (not measured): first-touch costs on both sides.
void WarmUp(const std::string& system, const std::string& target, int max_tokens,
            double timeout) {
  auto c = MakeClient(system, target, timeout, FlagSampling());
  if (std::string e = c->Open(); !e.empty()) {
    std::cerr << "warm-up: " << e << "\n";
    return;
  }
  TurnTrace t = c->Turn("Hello! Please introduce yourself.", max_tokens);
  if (!t.error.empty()) std::cerr << "warm-up: " << t.error << "\n";
}

int RunBench() {
  const std::string system = absl::GetFlag(FLAGS_system);
  const std::string target = absl::GetFlag(FLAGS_target);
  const int n = absl::GetFlag(FLAGS_concurrency);
  const int turns = absl::GetFlag(FLAGS_turns);
  const int max_tokens = absl::GetFlag(FLAGS_max_tokens);
  const double timeout = absl::GetFlag(FLAGS_turn_timeout);
  if (MakeClient(system, target, timeout, FlagSampling()) == nullptr || n < 1 || turns < 1 ||
      max_tokens < 1) {
    std::cerr << "need --system rsd|rsd-worker|rsd-http|llama, --concurrency >= 1, --turns >= 1, "
                 "--max_tokens >= 1\n";
    return 2;
  }
  if (!WaitReady(system, target, absl::GetFlag(FLAGS_wait_ready))) {
    std::cerr << system << " at " << target << " was not ready in time\n";
    return 1;
  }
  WarmUp(system, target, max_tokens, timeout);
  std::vector<std::vector<TurnTrace>> traces(n);
  absl::Barrier* ready = new absl::Barrier(n + 1);
  std::atomic<int> open_errors{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      auto client = MakeClient(system, target, timeout, FlagSampling());
      const std::string e = client->Open();
      if (!e.empty()) {
        std::cerr << "session " << i << ": " << e << "\n";
        open_errors++;
      }
      if (ready->Block()) delete ready;
      for (int t = 0; e.empty() && t < turns; ++t) {
        traces[i].push_back(client->Turn(UserMessage(i, t), max_tokens));
      }
    });
  }
  if (ready->Block()) delete ready;
  const auto start = Clock::now();
  for (auto& t : threads) t.join();
  const double wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  Row r = Summarize(traces, wall_s);
  r.system = system == "rsd"          ? "residuum"
             : system == "rsd-worker" ? "residuum-worker"
             : system == "rsd-http"   ? "residuum-http"
                                      : "llama-server";
  r.n = n;
  r.turns = turns;
  r.max_tokens = max_tokens;
  r.threads = absl::GetFlag(FLAGS_threads);
  r.errors += open_errors;
  std::cout << kHeader << "\n" << CsvLine(r) << "\n";
  const std::string csv = absl::GetFlag(FLAGS_csv);
  if (!csv.empty()) {
    const bool fresh = !std::ifstream(csv).good();
    std::ofstream out(csv, std::ios::app);
    if (fresh) out << kHeader << "\n";
    out << CsvLine(r) << "\n";
  }
  return r.errors == 0 ? 0 : 1;
}

// Prints the side-by-side table of a CSV written by RunBench, with ours / llama-server per N.
int Report(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    std::cerr << "cannot read " << path << "\n";
    return 1;
  }
  std::string line;
  std::getline(in, line);  // header
  std::map<int, std::map<std::string, std::vector<std::string>>> rows;  // n -> system -> fields
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ',');
    int n = 0;
    if (f.size() < 17 || !absl::SimpleAtoi(f[1], &n)) continue;
    rows[n][f[0]] = f;  // the last row of a (system, N) wins
  }
  std::printf("%-13s %3s %5s %4s %6s %4s %9s %7s | %8s %8s %8s | %7s %7s %7s | %6s\n", "system",
              "N", "turns", "max", "tokens", "err", "tok/s", "wall_s", "ttft_p50", "ttft_p95",
              "ttft_p99", "itl_p50", "itl_p95", "itl_p99", "ratio");
  for (const auto& [n, by_system] : rows) {
    std::map<std::string, double> tok_s;
    for (const auto& [system, f] : by_system) {
      double v = 0;
      if (absl::SimpleAtod(f[10], &v)) tok_s[system] = v;
    }
    for (const auto& [system, f] : by_system) {
      std::string ratio = "";
      // residuum against llama-server; residuum-http and residuum-worker against residuum over
      // gRPC through the router.
      const char* peer = system == "residuum"                                       ? "llama-server"
                         : system == "residuum-http" || system == "residuum-worker" ? "residuum"
                                                                                    : "";
      if (*peer != '\0' && tok_s[peer] > 0) {
        ratio = absl::StrFormat("%.2fx", tok_s[system] / tok_s[peer]);
      }
      std::printf("%-13s %3s %5s %4s %6s %4s %9s %7s | %8s %8s %8s | %7s %7s %7s | %6s\n",
                  f[0].c_str(), f[1].c_str(), f[2].c_str(), f[3].c_str(), f[8].c_str(),
                  f[6].c_str(), f[10].c_str(), f[9].c_str(), f[11].c_str(), f[12].c_str(),
                  f[13].c_str(), f[14].c_str(), f[15].c_str(), f[16].c_str(), ratio.c_str());
    }
  }
  std::printf(
      "latencies in ms; tok/s = generated tokens / wall time of the N-session run; "
      "ratio = residuum tok/s / llama-server tok/s at the same N (residuum-http: / "
      "residuum over gRPC; residuum-worker, no router: / residuum through it)\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  rsd::SkipMutexDeadlockChecks();  // its gRPC client threads share the cores with the servers
  absl::SetProgramUsageMessage(
      "rsd-serving-bench --system rsd|rsd-worker|rsd-http|llama --target HOST:PORT --concurrency N "
      "[--turns T] "
      "[--max_tokens M] [--csv FILE]\n  or: rsd-serving-bench --report FILE");
  absl::ParseCommandLine(argc, argv);
  const std::string report = absl::GetFlag(FLAGS_report);
  if (!report.empty()) return Report(report);
  return RunBench();
}
