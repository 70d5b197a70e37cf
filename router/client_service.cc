// rsd.v1.Client: translation onto the core's session calls (sessions.cc, chat.cc) and the models
// the registry knows.
#include <utility>

#include "absl/time/clock.h"
#include "router/router_service.h"

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
  absl::StatusOr<v1::SessionInfo> r = core_.CreateSession(CallerOf(*ctx), *req);
  core_.metrics().Request("grpc", "CreateSession", r.status().code(),
                          absl::ToDoubleSeconds(absl::Now() - start));
  return Answer(std::move(r), resp);
}

grpc::Status ClientService::Chat(grpc::ServerContext* ctx, const v1::TurnRequest* req,
                                 grpc::ServerWriter<v1::ChatEvent>* writer) {
  const absl::Time start = absl::Now();
  const absl::Status s = core_.Chat(
      CallerOf(*ctx), *req, [writer](const v1::ChatEvent& ev) { return writer->Write(ev); });
  core_.metrics().Request("grpc", "Chat", s.code(), absl::ToDoubleSeconds(absl::Now() - start));
  return ToGrpc(s);
}

grpc::Status ClientService::GetSession(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                                       v1::SessionInfo* resp) {
  return Answer(core_.GetSession(CallerOf(*ctx), req->session_id()), resp);
}

grpc::Status ClientService::CloseSession(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                                         v1::CloseSessionResponse* resp) {
  return ToGrpc(core_.CloseSession(CallerOf(*ctx), req->session_id()));
}

grpc::Status ClientService::UndoTurn(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                                     v1::SessionInfo* resp) {
  return Answer(core_.UndoTurn(CallerOf(*ctx), req->session_id()), resp);
}

grpc::Status ClientService::ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest* req,
                                       v1::ListModelsResponse* resp) {
  for (const ModelSummary& m : core_.registry().Models()) {
    v1::ModelInfo* out = resp->add_models();
    out->set_name(m.name);
    out->set_fingerprint(m.fingerprint);
    out->set_context_length(m.context_length);
    for (const std::string& w : m.workers) out->add_workers(w);
  }
  return grpc::Status::OK;
}

std::string TenantOf(const grpc::ServerContext& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("x-rsd-tenant");
  if (it == md.end() || it->second.empty()) return "default";
  return std::string(it->second.data(), it->second.size());
}

Caller CallerOf(const grpc::ServerContext& ctx) {
  Caller c;
  c.tenant = TenantOf(ctx);
  c.deadline = absl::FromChrono(ctx.deadline());
  c.cancelled = [&ctx] { return ctx.IsCancelled(); };
  return c;
}

}  // namespace rsd::router
