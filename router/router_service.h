// The router's gRPC layer: rsd.v1.Client, rsd.v1.Admin and rsd.v1.Registry over RouterCore
// (router_core.h). Handlers translate: the caller's tenant (metadata "x-rsd-tenant", "default"
// without it), deadline and cancellation in, absl::Status out as grpc::Status with the same code
// and message.
//
// Thread safety: every handler may run concurrently (gRPC's sync server thread pool).
#pragma once

#include <string>

#include "grpcpp/grpcpp.h"
#include "proto/grpc_status.h"
#include "router/router_core.h"
#include "rsd/v1/admin.grpc.pb.h"
#include "rsd/v1/client.grpc.pb.h"
#include "rsd/v1/worker.grpc.pb.h"

namespace rsd::router {

// absl::Status <-> grpc::Status (proto/grpc_status.h).
using rsd::FromGrpc;
using rsd::ToGrpc;
// The caller's tenant: metadata "x-rsd-tenant", else "default".
std::string TenantOf(const grpc::ServerContext& ctx);
// The caller as the core sees it: tenant, deadline, cancellation.
Caller CallerOf(const grpc::ServerContext& ctx);

class ClientService final : public v1::Client::Service {
 public:
  explicit ClientService(RouterCore* core) : core_(*core) {}
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
};

class AdminService final : public v1::Admin::Service {
 public:
  explicit AdminService(RouterCore* core) : core_(*core) {}
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

 private:
  RouterCore& core_;
};

class RegistryService final : public v1::Registry::Service {
 public:
  explicit RegistryService(RouterCore* core) : core_(*core) {}
  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override;

 private:
  RouterCore& core_;
};

}  // namespace rsd::router
