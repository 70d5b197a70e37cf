// rsd.v1.Client: sessions (create, get, close, undo) and models. Chat is in chat.cc.
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "router/router_service.h"
#include "storage/common/status.h"

namespace rsd::router {

absl::StatusOr<v1::SessionInfo> ClientService::Create(const grpc::ServerContext& ctx,
                                                      const v1::CreateSessionRequest& req) {
  const std::string tenant = TenantOf(ctx);
  RSD_ASSIGN_OR_RETURN(WorkerSnapshot worker, core_.registry().Place(req.model()));
  SessionRecord rec;
  rec.id = SessionId::Random();
  rec.tenant = tenant;
  rec.model = worker.desc.model;
  rec.worker = worker.desc.id;
  rec.model_fingerprint = worker.desc.model_fingerprint;
  rec.epoch = 1;
  rec.ttl_seconds = req.options().ttl_seconds();
  rec.pin = req.options().pin();
  rec.priority = req.options().priority();
  rec.created_unix_ms = absl::ToUnixMillis(absl::Now());

  v1::OpenSessionRequest open;
  *open.mutable_ref() = RouterCore::RefOf(rec);
  open.set_model(rec.model);
  *open.mutable_options() = req.options();
  v1::SessionInfo info;
  std::unique_ptr<grpc::ClientContext> cctx = core_.WorkerContext(ctx);
  grpc::Status s = core_.WorkerStub(worker.desc.address)->OpenSession(cctx.get(), open, &info);
  if (!s.ok()) {
    core_.registry().AddPlaced(worker.desc.id, -1);
    return RouterCore::WorkerError(s, worker.desc.id, worker.desc.address);
  }
  absl::Status journaled = core_.journal().PutSession(rec);
  if (!journaled.ok()) {
    // Best effort: do not leave a session on the worker that the router does not know.
    std::unique_ptr<grpc::ClientContext> close_ctx = core_.WorkerContext(ctx);
    v1::SessionInfo ignored;
    (void)core_.WorkerStub(worker.desc.address)
        ->CloseSession(close_ctx.get(), RouterCore::RefOf(rec), &ignored);
    core_.registry().AddPlaced(worker.desc.id, -1);
    return journaled;
  }
  RouterCore::FillOwnership(rec, &info);
  return info;
}

absl::Status ClientService::Close(const grpc::ServerContext& ctx, const std::string& hex) {
  const std::string tenant = TenantOf(ctx);
  RSD_ASSIGN_OR_RETURN(SessionRecord rec, core_.LoadSession(hex, &tenant));
  // Not in the middle of a turn or a move; the owner as the journal has it then.
  RSD_ASSIGN_OR_RETURN(SessionGates::Lock gate,
                       core_.gates().Acquire(rec.id, "close", absl::FromChrono(ctx.deadline())));
  RSD_ASSIGN_OR_RETURN(rec, core_.LoadSession(hex, &tenant));
  absl::StatusOr<WorkerSnapshot> owner = core_.Owner(rec);
  if (owner.ok()) {
    std::unique_ptr<grpc::ClientContext> cctx = core_.WorkerContext(ctx);
    v1::SessionInfo ignored;
    grpc::Status s =
        core_.WorkerStub(owner->desc.address)->CloseSession(cctx.get(), RouterCore::RefOf(rec),
                                                            &ignored);
    // A worker that cannot be reached, or no longer has the session, does not keep the session
    // alive in the journal; any other refusal (e.g. a running turn) is the caller's to see.
    const grpc::StatusCode code = s.error_code();
    if (!s.ok() && code != grpc::StatusCode::UNAVAILABLE &&
        code != grpc::StatusCode::DEADLINE_EXCEEDED && code != grpc::StatusCode::NOT_FOUND) {
      return RouterCore::WorkerError(s, owner->desc.id, owner->desc.address);
    }
  }
  RSD_RETURN_IF_ERROR(core_.journal().DeleteSession(rec.id));
  core_.registry().AddPlaced(rec.worker, -1);
  return absl::OkStatus();
}

absl::StatusOr<v1::SessionInfo> ClientService::Undo(const grpc::ServerContext& ctx,
                                                    const std::string& hex) {
  const std::string tenant = TenantOf(ctx);
  RSD_ASSIGN_OR_RETURN(SessionRecord rec, core_.LoadSession(hex, &tenant));
  RSD_ASSIGN_OR_RETURN(SessionGates::Lock gate,
                       core_.gates().Acquire(rec.id, "undo", absl::FromChrono(ctx.deadline())));
  RSD_ASSIGN_OR_RETURN(rec, core_.LoadSession(hex, &tenant));
  RSD_ASSIGN_OR_RETURN(WorkerSnapshot owner, core_.Owner(rec));
  std::unique_ptr<grpc::ClientContext> cctx = core_.WorkerContext(ctx);
  v1::SessionInfo info;
  grpc::Status s =
      core_.WorkerStub(owner.desc.address)->UndoTurn(cctx.get(), RouterCore::RefOf(rec), &info);
  if (!s.ok()) return RouterCore::WorkerError(s, owner.desc.id, owner.desc.address);
  RSD_RETURN_IF_ERROR(core_.journal().RemoveLastTurn(rec.id).status());
  RouterCore::FillOwnership(rec, &info);
  return info;
}

grpc::Status ClientService::CreateSession(grpc::ServerContext* ctx,
                                          const v1::CreateSessionRequest* req,
                                          v1::SessionInfo* resp) {
  absl::StatusOr<v1::SessionInfo> info = Create(*ctx, *req);
  if (!info.ok()) return ToGrpc(info.status());
  *resp = std::move(*info);
  return grpc::Status::OK;
}

grpc::Status ClientService::Chat(grpc::ServerContext* ctx, const v1::TurnRequest* req,
                                 grpc::ServerWriter<v1::ChatEvent>* writer) {
  return ToGrpc(RunChat(core_, ctx, *req, writer));
}

grpc::Status ClientService::GetSession(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                                       v1::SessionInfo* resp) {
  const std::string tenant = TenantOf(*ctx);
  absl::StatusOr<SessionRecord> rec = core_.LoadSession(req->session_id(), &tenant);
  if (!rec.ok()) return ToGrpc(rec.status());
  absl::StatusOr<v1::SessionInfo> info = core_.Describe(*rec, *ctx);
  if (!info.ok()) return ToGrpc(info.status());
  *resp = std::move(*info);
  return grpc::Status::OK;
}

grpc::Status ClientService::CloseSession(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                                         v1::CloseSessionResponse* resp) {
  return ToGrpc(Close(*ctx, req->session_id()));
}

grpc::Status ClientService::UndoTurn(grpc::ServerContext* ctx, const v1::SessionRequest* req,
                                     v1::SessionInfo* resp) {
  absl::StatusOr<v1::SessionInfo> info = Undo(*ctx, req->session_id());
  if (!info.ok()) return ToGrpc(info.status());
  *resp = std::move(*info);
  return grpc::Status::OK;
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

}  // namespace rsd::router
