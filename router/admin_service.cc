// rsd.v1.Admin: workers, sessions of every tenant, cordon, and the ownership changes (migrate,
// drain, failover; the work is in migration.cc and failover.cc).
#include <utility>

#include "absl/time/clock.h"

#include "absl/strings/str_cat.h"
#include "router/router_service.h"
#include "storage/common/status.h"

namespace rsd::router {
namespace {

v1::WorkerInfo InfoOf(const WorkerSnapshot& w) {
  v1::WorkerInfo out;
  out.set_id(w.desc.id);
  out.set_address(w.desc.address);
  out.set_model(w.desc.model);
  out.set_model_fingerprint(w.desc.model_fingerprint);
  out.set_numerics_fingerprint(w.desc.numerics_fingerprint);
  out.set_state(WorkerStateName(w.state));
  v1::DeviceInfo* dev = out.mutable_device();
  dev->set_kind(w.desc.device_kind);
  dev->set_name(w.desc.device_name);
  dev->set_index(w.desc.device_index);
  dev->set_memory_total(w.desc.device_memory_total);
  dev->set_memory_limit(w.desc.device_memory_limit);
  dev->set_memory_used(w.desc.device_memory_used);
  dev->set_memory_bandwidth(w.desc.device_memory_bandwidth);
  v1::WorkerLoad* l = out.mutable_load();
  l->set_hot_bytes_total(w.desc.load.hot_bytes_total);
  l->set_hot_bytes_free(w.desc.load.hot_bytes_free);
  l->set_warm_bytes_total(w.desc.load.warm_bytes_total);
  l->set_warm_bytes_free(w.desc.load.warm_bytes_free);
  l->set_queue_depth(w.desc.load.queue_depth);
  l->set_running(w.desc.load.running);
  l->set_sessions(w.desc.load.sessions);
  l->set_queue_limit(w.desc.load.queue_limit);
  out.set_seconds_since_heartbeat(w.seconds_since_heartbeat);
  out.set_sessions(w.sessions_placed);
  return out;
}

absl::Time DeadlineOf(const grpc::ServerContext& ctx) { return absl::FromChrono(ctx.deadline()); }

}  // namespace

grpc::Status AdminService::ListWorkers(grpc::ServerContext* ctx,
                                       const v1::ListWorkersRequest* req,
                                       v1::ListWorkersResponse* resp) {
  for (const WorkerSnapshot& w : core_.registry().List()) *resp->add_workers() = InfoOf(w);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListSessions(grpc::ServerContext* ctx,
                                        const v1::ListSessionsRequest* req,
                                        v1::ListSessionsResponse* resp) {
  absl::StatusOr<std::vector<SessionRecord>> sessions = core_.journal().ListSessions();
  if (!sessions.ok()) return ToGrpc(sessions.status());
  for (const SessionRecord& s : *sessions) {
    if (!req->worker().empty() && s.worker != req->worker()) continue;
    absl::StatusOr<v1::SessionInfo> info = core_.FromJournal(s);
    if (!info.ok()) return ToGrpc(info.status());
    *resp->add_sessions() = std::move(*info);
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::DescribeSession(grpc::ServerContext* ctx,
                                           const v1::DescribeSessionRequest* req,
                                           v1::SessionInfo* resp) {
  absl::StatusOr<SessionRecord> rec = core_.LoadSession(req->session_id(), nullptr);
  if (!rec.ok()) return ToGrpc(rec.status());
  absl::StatusOr<v1::SessionInfo> info = core_.Describe(*rec, DeadlineOf(*ctx));
  if (!info.ok()) return ToGrpc(info.status());
  *resp = std::move(*info);
  return grpc::Status::OK;
}

grpc::Status AdminService::Cordon(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                                  v1::WorkerInfo* resp) {
  absl::StatusOr<WorkerSnapshot> w = core_.registry().SetCordoned(req->worker(), true);
  if (!w.ok()) return ToGrpc(w.status());
  *resp = InfoOf(*w);
  return grpc::Status::OK;
}

grpc::Status AdminService::Uncordon(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                                    v1::WorkerInfo* resp) {
  absl::StatusOr<WorkerSnapshot> w = core_.registry().SetCordoned(req->worker(), false);
  if (!w.ok()) return ToGrpc(w.status());
  *resp = InfoOf(*w);
  return grpc::Status::OK;
}

grpc::Status AdminService::Drain(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                                 v1::DrainResponse* resp) {
  absl::StatusOr<std::vector<v1::MigrateResponse>> moved =
      core_.Drain(req->worker(), DeadlineOf(*ctx));
  if (!moved.ok()) return ToGrpc(moved.status());
  for (v1::MigrateResponse& m : *moved) *resp->add_moved() = std::move(m);
  absl::StatusOr<WorkerSnapshot> w = core_.registry().Get(req->worker());
  if (w.ok()) *resp->mutable_worker() = InfoOf(*w);
  return grpc::Status::OK;
}

grpc::Status AdminService::Migrate(grpc::ServerContext* ctx, const v1::MigrateRequest* req,
                                   v1::MigrateResponse* resp) {
  absl::StatusOr<v1::MigrateResponse> moved =
      core_.Migrate(req->session_id(), req->to_worker(), req->form(), DeadlineOf(*ctx));
  if (!moved.ok()) return ToGrpc(moved.status());
  *resp = std::move(*moved);
  return grpc::Status::OK;
}

grpc::Status AdminService::Failover(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                                    v1::FailoverResponse* resp) {
  absl::StatusOr<std::vector<v1::MigrateResponse>> moved =
      core_.Failover(req->worker(), DeadlineOf(*ctx));
  if (!moved.ok()) return ToGrpc(moved.status());
  for (v1::MigrateResponse& m : *moved) *resp->add_moved() = std::move(m);
  absl::StatusOr<WorkerSnapshot> w = core_.registry().Get(req->worker());
  if (w.ok()) *resp->mutable_worker() = InfoOf(*w);
  return grpc::Status::OK;
}

}  // namespace rsd::router
