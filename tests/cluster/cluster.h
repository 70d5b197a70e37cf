// A local cluster of real processes for tests: rsd-router and rsd-worker binaries on loopback
// ports, gRPC stubs to them, and the reference `rsd-run chat` each session is compared with.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "rsd/v1/admin.grpc.pb.h"
#include "rsd/v1/client.grpc.pb.h"
#include "rsd/v1/worker.grpc.pb.h"
#include "tests/support/process.h"

namespace rsd::testing {

std::string BinDir();  // where rsd-router, rsd-worker, rsd-run and rsdctl were built

struct WorkerSpec {
  std::string id;
  std::vector<std::string> flags;  // extra rsd-worker flags
};

class Cluster {
 public:
  // Starts a router and the workers on `model`, waits until every worker is registered.
  static absl::StatusOr<std::unique_ptr<Cluster>> Start(const std::string& model,
                                                        const std::vector<WorkerSpec>& workers,
                                                        std::vector<std::string> router_flags = {});
  ~Cluster();

  const std::string& router_address() const { return router_address_; }
  v1::Client::Stub& client() { return *client_; }
  v1::Admin::Stub& admin() { return *admin_; }
  // A worker's own service (for its counters).
  v1::Worker::Stub& worker(const std::string& id) { return *worker_stubs_.at(id); }
  Process& worker_process(const std::string& id) { return workers_.at(id); }
  Process& router_process() { return router_; }
  std::string Logs();

  absl::StatusOr<v1::WorkerStatus> WorkerStatus(const std::string& id);
  // Starts another worker (on its own model) and waits until it is registered and ready.
  absl::Status AddWorker(const std::string& model, const WorkerSpec& spec);
  // Starts a stopped (killed) worker again on the same address and data dir; waits until ready.
  absl::Status RestartWorker(const std::string& id);
  // Starts a stopped (killed) router again on the same address and data dir; waits until every
  // worker started so far has registered with it again and is ready.
  absl::Status RestartRouter();
  absl::Status Cordon(const std::string& id, bool on);
  // Admin.Drain of worker `id` (its sessions move to the other ready workers; it stays draining
  // until Cordon(id, false)).
  absl::StatusOr<v1::DrainResponse> Drain(const std::string& id);
  absl::StatusOr<v1::SessionInfo> Create(const std::string& model = "");
  // Admin.Migrate of `session` to worker `to` in `form` (residual, kv, tokens, auto).
  absl::StatusOr<v1::MigrateResponse> Migrate(const std::string& session, const std::string& to,
                                              const std::string& form);

 private:
  Cluster() = default;
  absl::Status Launch(const std::string& model, const WorkerSpec& spec);
  absl::Status WaitReady(const std::vector<std::string>& ids, double seconds);
  std::string dir_;
  std::string router_address_;
  Process router_;
  std::vector<std::string> router_argv_;
  std::map<std::string, Process> workers_;
  std::map<std::string, std::vector<std::string>> worker_argv_;
  std::map<std::string, std::unique_ptr<v1::Worker::Stub>> worker_stubs_;
  std::unique_ptr<v1::Client::Stub> client_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

// The outcome of one streamed turn.
struct ChatOutcome {
  grpc::Status status;
  std::vector<int32_t> tokens;  // from the deltas
  std::string text;             // from the deltas
  v1::TurnDone done;
  int deltas = 0;
};

// Runs one turn through the router's Client.Chat and checks the stream's framing (offsets
// contiguous, exactly one TurnDone at the end, deltas equal to the done message's tokens).
ChatOutcome Chat(v1::Client::Stub& client, const v1::TurnRequest& request,
                 double timeout_seconds = 300);

// The user message of turn t of session s in the multi-session tests: twelve short messages,
// each session starting at its own place.
std::string ScriptMessage(int s, int t);

// The p-quantile of `v` (nearest rank; 0 for none).
double Percentile(std::vector<double> v, double p);

// What the journal says of a session (Admin.DescribeSession).
absl::StatusOr<v1::SessionInfo> DescribeSession(Cluster& c, const std::string& session);
// The sessions a worker holds, from its own Worker.ListSessions (empty if it does not answer).
std::vector<v1::SessionInfo> HeldSessions(Cluster& c, const std::string& worker);

// `rsd-run chat` on a script of user messages: per turn the generated tokens.
absl::StatusOr<std::vector<std::vector<int32_t>>> RsdRunChat(
    const std::string& model, const std::vector<std::string>& messages, int max_tokens,
    float temperature, int top_k, uint64_t seed);

}  // namespace rsd::testing
