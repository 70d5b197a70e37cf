// The worker's gRPC layer (rsd.v1.Worker): validates requests, turns them into scheduler turns and
// session-manager calls on the compute thread, and streams events back. Thin by design: every
// decision about sessions and batching lives in worker/engine.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "grpcpp/security/credentials.h"
#include "proto/grpc_status.h"
#include "rsd/v1/worker.grpc.pb.h"
#include "worker/engine/scheduler.h"
#include "worker/service/worker_metrics.h"

namespace rsd {

struct WorkerServiceOptions {
  std::string id;                 // worker name (--id)
  std::string address;            // where the router reaches it
  std::string model_name;         // what clients ask for
  int default_max_tokens = 256;   // a turn without max_tokens
  size_t max_message_bytes = 64 << 10;  // user text per turn, and the context's messages together
  int max_stop_strings = 16;
  size_t max_stop_bytes = 256;
  int replay_turns = 16;          // committed turn ids remembered per session (retries)
  // Secures the channel of SendSession to a peer worker (null: insecure; tls.h).
  std::shared_ptr<grpc::ChannelCredentials> peer_credentials;
};

class WorkerService final : public v1::Worker::Service {
 public:
  WorkerService(Engine* engine, SessionManager* sessions, Scheduler* scheduler,
                WorkerServiceOptions options);

  grpc::Status OpenSession(grpc::ServerContext* ctx, const v1::OpenSessionRequest* req,
                           v1::SessionInfo* out) override;
  grpc::Status Chat(grpc::ServerContext* ctx, const v1::WorkerChatRequest* req,
                    grpc::ServerWriter<v1::ChatEvent>* writer) override;
  grpc::Status DescribeSession(grpc::ServerContext* ctx, const v1::SessionRef* req,
                               v1::SessionInfo* out) override;
  grpc::Status CloseSession(grpc::ServerContext* ctx, const v1::SessionRef* req,
                            v1::SessionInfo* out) override;
  grpc::Status UndoTurn(grpc::ServerContext* ctx, const v1::SessionRef* req,
                        v1::SessionInfo* out) override;
  grpc::Status ListSessions(grpc::ServerContext* ctx, const v1::WorkerListSessionsRequest* req,
                            v1::WorkerListSessionsResponse* out) override;
  grpc::Status GetStatus(grpc::ServerContext* ctx, const v1::WorkerStatusRequest* req,
                         v1::WorkerStatus* out) override;
  grpc::Status ExportSession(grpc::ServerContext* ctx, const v1::ExportSessionRequest* req,
                             grpc::ServerWriter<v1::StateChunk>* writer) override;
  grpc::Status ImportSession(grpc::ServerContext* ctx, grpc::ServerReader<v1::StateChunk>* reader,
                             v1::ImportSessionResponse* out) override;
  grpc::Status SendSession(grpc::ServerContext* ctx, const v1::SendSessionRequest* req,
                           v1::ImportSessionResponse* out) override;
  grpc::Status PromptKeys(grpc::ServerContext* ctx, const v1::PromptKeysRequest* req,
                          v1::PromptKeysResponse* out) override;
  grpc::Status HeldPrefix(grpc::ServerContext* ctx, const v1::HeldPrefixRequest* req,
                          v1::HeldPrefixResponse* out) override;

  // Registration: the sessions this worker holds, with their epochs; and dropping those the
  // router says are no longer ours (failed over or migrated while we were away).
  std::vector<v1::SessionRef> SessionRefs(std::vector<uint32_t>* turns = nullptr);
  void Drop(const google::protobuf::RepeatedPtrField<v1::SessionRef>& refs);

  // The status heartbeats carry (also GetStatus).
  v1::WorkerStatus Status();
  // Measures the rebuild rates once (at start, before serving).
  void MeasureRates();
  // Where committed turns are recorded (before serving; may stay null). Must outlive the service.
  void set_metrics(WorkerMetrics* metrics) { metrics_ = metrics; }
  // Imports refused because their sender went away before it ended the stream (nothing kept).
  int64_t imports_cut() const { return imports_cut_.load(); }

 private:
  // Checks the ref (id format, tenant, epoch) on the compute thread and runs `fn` there.
  grpc::Status WithSession(const v1::SessionRef& ref, bool check_epoch,
                           const std::function<absl::Status(const SessionId&)>& fn);
  absl::Status FillInfo(const SessionId& id, v1::SessionInfo* out);  // compute thread
  // The session's state for `req` (at its target epoch) once no turn of it is running.
  grpc::Status ExportFor(const v1::ExportSessionRequest& req, SessionState* state);
  grpc::Status ValidateTurn(const v1::TurnRequest& turn, GenerateParams* params) const;
  // A retried turn id committed here: its answer written again (nothing appended). turns_mu_ held.
  bool ReplayLocked(const SessionId& id, const std::string& turn_id,
                    grpc::ServerWriter<v1::ChatEvent>* writer);
  // The turn's events to the client until its end; a client that goes away cancels the turn.
  grpc::Status Relay(grpc::ServerContext* ctx, TurnStream& stream, const SessionId& id,
                     const std::string& turn_id, grpc::ServerWriter<v1::ChatEvent>* writer);
  v1::TurnDone DoneOf(const TurnEvent& ev) const;  // a committed turn's final message

  Engine* engine_;
  SessionManager* sessions_;
  Scheduler* scheduler_;
  const WorkerServiceOptions options_;
  v1::RebuildRates rates_;
  v1::DeviceInfo device_;  // read once at start: heartbeats must not touch the backend

  // Idempotent turn ids: per session, the last committed turns' results; turns in flight.
  std::mutex turns_mu_;
  std::map<std::string, std::deque<std::pair<std::string, v1::TurnDone>>> committed_;
  std::set<std::string> in_flight_;  // "session/turn_id"
  WorkerMetrics* metrics_ = nullptr;
  std::atomic<int64_t> imports_cut_{0};
};

}  // namespace rsd
