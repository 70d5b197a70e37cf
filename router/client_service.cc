// rsd.v1.Client: translation onto the core's session calls (sessions.cc, chat.cc) and the models
// the registry knows.
#include <utility>

#include "absl/time/clock.h"
#include "router/router_service.h"
#include "storage/common/status.h"

namespace rsd::router {
namespace {

template <typename T>
grpc::Status Answer(absl::StatusOr<T> result, T* resp) {
  if (!result.ok()) return ToGrpc(result.status());
  *resp = std::move(*result);
  return grpc::Status::OK;
}

}  // namespace

grpc::Status ClientService::CreateSession(grpc::ServerContext* ctx,
                                          const v1::CreateSessionRequest* req,
                                          v1::SessionInfo* resp) {
  const absl::Time start = absl::Now();
  absl::StatusOr<Caller> caller = CallerOf(gate_, *ctx);
  absl::StatusOr<v1::SessionInfo> r =
      caller.ok() ? core_.CreateSession(*caller, *req) : caller.status();
  core_.metrics().Request("grpc", "CreateSession", r.status().code(),
                          absl::ToDoubleSeconds(absl::Now() - start));
  return Answer(std::move(r), resp);
}

grpc::Status ClientService::Chat(grpc::ServerContext* ctx, const v1::TurnRequest* req,
                                 grpc::ServerWriter<v1::ChatEvent>* writer) {
  const absl::Time start = absl::Now();
  absl::StatusOr<Caller> caller = CallerOf(gate_, *ctx);
  const absl::Status s =
      caller.ok() ? core_.Chat(*caller, *req,
                               [writer](const v1::ChatEvent& ev) { return writer->Write(ev); })
                  : caller.status();
  core_.metrics().Request("grpc", "Chat", s.code(), absl::ToDoubleSeconds(absl::Now() - start));
  return ToGrpc(s);
}

grpc::Status ClientService::GetSession(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                                       v1::SessionInfo* resp) {
  absl::StatusOr<Caller> caller = CallerOf(gate_, *ctx);
  if (!caller.ok()) return ToGrpc(caller.status());
  return Answer(core_.GetSession(*caller, req->session_id()), resp);
}

grpc::Status ClientService::CloseSession(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                                         v1::CloseSessionResponse* resp) {
  absl::StatusOr<Caller> caller = CallerOf(gate_, *ctx);
  if (!caller.ok()) return ToGrpc(caller.status());
  return ToGrpc(core_.CloseSession(*caller, req->session_id()));
}

grpc::Status ClientService::UndoTurn(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                                     v1::SessionInfo* resp) {
  absl::StatusOr<Caller> caller = CallerOf(gate_, *ctx);
  if (!caller.ok()) return ToGrpc(caller.status());
  return Answer(core_.UndoTurn(*caller, req->session_id()), resp);
}

grpc::Status ClientService::ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest* req,
                                       v1::ListModelsResponse* resp) {
  if (absl::StatusOr<Caller> caller = CallerOf(gate_, *ctx); !caller.ok()) {
    return ToGrpc(caller.status());
  }
  for (const ModelSummary& m : core_.registry().Models()) {
    v1::ModelInfo* out = resp->add_models();
    out->set_name(m.name);
    out->set_fingerprint(m.fingerprint);
    out->set_context_length(m.context_length);
    for (const std::string& w : m.workers) out->add_workers(w);
  }
  return grpc::Status::OK;
}

std::string MetadataOf(const grpc::ServerContext& ctx, const std::string& key) {
  const auto& md = ctx.client_metadata();
  auto it = md.find(key);
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

absl::StatusOr<Caller> CallerOf(const Gatekeeper& gate, const grpc::ServerContext& ctx) {
  RSD_ASSIGN_OR_RETURN(const Principal who, gate.Client(MetadataOf(ctx, "authorization"),
                                                        MetadataOf(ctx, "x-rsd-tenant")));
  Caller c;
  c.tenant = who.tenant;
  c.deadline = absl::FromChrono(ctx.deadline());
  c.cancelled = [&ctx] { return ctx.IsCancelled(); };
  return c;
}

}  // namespace rsd::router
