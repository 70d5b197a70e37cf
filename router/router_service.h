// The router's gRPC layer: rsd.v1.Client, rsd.v1.Admin and rsd.v1.Registry over RouterCore
// (router_core.h). Handlers translate: the caller (checked by the Gatekeeper from metadata
// "authorization: Bearer <key>" with --auth, else the tenant named by "x-rsd-tenant", "default"
// without it), deadline and cancellation in, absl::Status out as grpc::Status with the same code
// and message. Every Admin call is authorized and audited by the Gatekeeper.
//
// Thread safety: every handler may run concurrently (gRPC's sync server thread pool).
#pragma once

#include <functional>
#include <string>

#include "grpcpp/grpcpp.h"
#include "proto/grpc_status.h"
#include "router/gatekeeper.h"
#include "router/router_core.h"
#include "rsd/v1/admin.grpc.pb.h"
#include "rsd/v1/client.grpc.pb.h"
#include "rsd/v1/worker.grpc.pb.h"

namespace rsd::router {

// absl::Status <-> grpc::Status (proto/grpc_status.h).
using rsd::FromGrpc;
using rsd::ToGrpc;
// The value of metadata `key` ("" if absent).
std::string MetadataOf(const grpc::ServerContext& ctx, const std::string& key);
// The caller of a Client-service call as the core sees it (tenant, deadline, cancellation), or
// the gatekeeper's refusal.
absl::StatusOr<Caller> CallerOf(const Gatekeeper& gate, const grpc::ServerContext& ctx);

class ClientService final : public v1::Client::Service {
 public:
  // `core` and `gate` must outlive the service.
  ClientService(RouterCore* core, const Gatekeeper* gate) : core_(*core), gate_(*gate) {}
  grpc::Status CreateSession(grpc::ServerContext* ctx, const v1::CreateSessionRequest* req,
                             v1::SessionInfo* resp) override;
  grpc::Status Chat(grpc::ServerContext* ctx, const v1::TurnRequest* req,
                    grpc::ServerWriter<v1::ChatEvent>* writer) override;
  grpc::Status GetSession(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                          v1::SessionInfo* resp) override;
  grpc::Status CloseSession(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                            v1::CloseSessionResponse* resp) override;
  grpc::Status UndoTurn(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                        v1::SessionInfo* resp) override;
  grpc::Status ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest* req,
                          v1::ListModelsResponse* resp) override;

 private:
  RouterCore& core_;
  const Gatekeeper& gate_;
};

class AdminService final : public v1::Admin::Service {
 public:
  // `core` and `gate` must outlive the service.
  AdminService(RouterCore* core, const Gatekeeper* gate) : core_(*core), gate_(*gate) {}
  grpc::Status ListWorkers(grpc::ServerContext* ctx, const v1::ListWorkersRequest* req,
                           v1::ListWorkersResponse* resp) override;
  grpc::Status ListSessions(grpc::ServerContext* ctx, const v1::ListSessionsRequest* req,
                            v1::ListSessionsResponse* resp) override;
  grpc::Status DescribeSession(grpc::ServerContext* ctx, const v1::DescribeSessionRequest* req,
                               v1::SessionInfo* resp) override;
  grpc::Status Cordon(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                      v1::WorkerInfo* resp) override;
  grpc::Status Uncordon(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                        v1::WorkerInfo* resp) override;
  grpc::Status Drain(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                     v1::DrainResponse* resp) override;
  grpc::Status Migrate(grpc::ServerContext* ctx, const v1::MigrateRequest* req,
                       v1::MigrateResponse* resp) override;
  grpc::Status Failover(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                        v1::FailoverResponse* resp) override;
  grpc::Status CreateKey(grpc::ServerContext* ctx, const v1::CreateKeyRequest* req,
                         v1::CreateKeyResponse* resp) override;
  grpc::Status ListKeys(grpc::ServerContext* ctx, const v1::ListKeysRequest* req,
                        v1::ListKeysResponse* resp) override;
  grpc::Status RevokeKey(grpc::ServerContext* ctx, const v1::RevokeKeyRequest* req,
                         v1::KeyInfo* resp) override;

 private:
  // Runs an Admin RPC `action` on `target` through the gatekeeper (authorized and audited).
  grpc::Status Call(const grpc::ServerContext& ctx, const std::string& action,
                    const std::string& target, const std::function<absl::Status()>& body);
  RouterCore& core_;
  const Gatekeeper& gate_;
};

class RegistryService final : public v1::Registry::Service {
 public:
  // `core` and `gate` must outlive the service.
  RegistryService(RouterCore* core, const Gatekeeper* gate) : core_(*core), gate_(*gate) {}
  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override;

 private:
  RouterCore& core_;
  const Gatekeeper& gate_;
};

}  // namespace rsd::router
