// WorkerClients over gRPC: one channel per worker address, cached. Streams poll their
// CallScope::cancelled every 20 ms while they wait, so a client that goes away cancels the worker's
// call too.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/security/credentials.h"
#include "router/worker_client.h"
#include "rsd/v1/worker.grpc.pb.h"

namespace rsd::router {

class GrpcWorkerClients final : public WorkerClients {
 public:
  // `max_message_bytes` bounds messages both ways on every channel; `credentials` (null:
  // insecure) secure them (tls.h ChannelCredentialsFor).
  explicit GrpcWorkerClients(int max_message_bytes,
                             std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr)
      : max_message_bytes_(max_message_bytes), credentials_(std::move(credentials)) {}
  std::shared_ptr<WorkerClient> At(const std::string& address) override;
  void Reconnect(const std::string& address) override;

 private:
  const int max_message_bytes_;
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  absl::Mutex mu_;
  struct Entry {
    std::shared_ptr<grpc::Channel> channel;
    std::shared_ptr<WorkerClient> client;  // over `channel`
  };
  std::map<std::string, Entry> clients_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rsd::router
