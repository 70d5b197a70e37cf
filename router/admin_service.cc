// rsd.v1.Admin: workers, sessions of every tenant, cordon, and the ownership changes (migrate,
// drain, failover; the work is in migration.cc and failover.cc).
#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
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
  l->set_shared_bytes(w.desc.load.shared_bytes);
  l->set_saved_bytes(w.desc.load.saved_bytes);
  l->set_cold_bytes(w.desc.load.cold_bytes);
  l->set_cold_saved_bytes(w.desc.load.cold_saved_bytes);
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

grpc::Status AdminService::Call(const grpc::ServerContext& ctx, const std::string& action,
                                const std::string& target,
                                const std::function<absl::Status()>& body) {
  return ToGrpc(gate_.Admin(MetadataOf(ctx, "authorization"), MetadataOf(ctx, "x-rsd-tenant"),
                            action, target, [&](const Principal&) { return body(); }));
}

grpc::Status AdminService::ListWorkers(grpc::ServerContext* ctx,
                                       const v1::ListWorkersRequest* req,
                                       v1::ListWorkersResponse* resp) {
  return Call(*ctx, "ListWorkers", "", [&] {
    for (const WorkerSnapshot& w : core_.registry().List()) *resp->add_workers() = InfoOf(w);
    return absl::OkStatus();
  });
}

grpc::Status AdminService::ListSessions(grpc::ServerContext* ctx,
                                        const v1::ListSessionsRequest* req,
                                        v1::ListSessionsResponse* resp) {
  return Call(*ctx, "ListSessions", req->worker(), [&]() -> absl::Status {
    if (req->page_size() < 0) {
      return absl::InvalidArgumentError("page_size must be >= 0 (0: the default of 500)");
    }
    const size_t limit = req->page_size() == 0 ? 500 : std::min(req->page_size(), 1000);
    std::optional<SessionId> after;
    if (!req->page_token().empty()) {
      absl::StatusOr<SessionId> id = ParseSessionId(req->page_token());
      if (!id.ok()) return absl::InvalidArgumentError("page_token is not one this router gave");
      after = *id;
    }
    bool more = false;
    const auto on_worker = [&](const SessionRecord& s) {
      return req->worker().empty() || s.worker == req->worker();
    };
    RSD_ASSIGN_OR_RETURN(
        const std::vector<SessionRecord> sessions,
        core_.journal().ListSessionsPage(after ? &*after : nullptr, limit, on_worker, &more));
    for (const SessionRecord& s : sessions) {
      RSD_ASSIGN_OR_RETURN(*resp->add_sessions(), core_.FromJournal(s));
    }
    if (more && !sessions.empty()) resp->set_next_page_token(sessions.back().id.ToHex());
    return absl::OkStatus();
  });
}

grpc::Status AdminService::DescribeSession(grpc::ServerContext* ctx,
                                           const v1::DescribeSessionRequest* req,
                                           v1::SessionInfo* resp) {
  return Call(*ctx, "DescribeSession", req->session_id(), [&]() -> absl::Status {
    RSD_ASSIGN_OR_RETURN(const SessionRecord rec, core_.LoadSession(req->session_id(), nullptr));
    RSD_ASSIGN_OR_RETURN(*resp, core_.Describe(rec, DeadlineOf(*ctx)));
    return absl::OkStatus();
  });
}

grpc::Status AdminService::Cordon(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                                  v1::WorkerInfo* resp) {
  return Call(*ctx, "Cordon", req->worker(), [&]() -> absl::Status {
    RSD_ASSIGN_OR_RETURN(const WorkerSnapshot w, core_.registry().SetCordoned(req->worker(), true));
    *resp = InfoOf(w);
    return absl::OkStatus();
  });
}

grpc::Status AdminService::Uncordon(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                                    v1::WorkerInfo* resp) {
  return Call(*ctx, "Uncordon", req->worker(), [&]() -> absl::Status {
    RSD_ASSIGN_OR_RETURN(const WorkerSnapshot w,
                         core_.registry().SetCordoned(req->worker(), false));
    *resp = InfoOf(w);
    return absl::OkStatus();
  });
}

grpc::Status AdminService::Drain(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                                 v1::DrainResponse* resp) {
  return Call(*ctx, "Drain", req->worker(), [&]() -> absl::Status {
    RSD_ASSIGN_OR_RETURN(std::vector<v1::MigrateResponse> moved,
                         core_.Drain(req->worker(), DeadlineOf(*ctx)));
    for (v1::MigrateResponse& m : moved) *resp->add_moved() = std::move(m);
    absl::StatusOr<WorkerSnapshot> w = core_.registry().Get(req->worker());
    if (w.ok()) *resp->mutable_worker() = InfoOf(*w);
    return absl::OkStatus();
  });
}

grpc::Status AdminService::Migrate(grpc::ServerContext* ctx, const v1::MigrateRequest* req,
                                   v1::MigrateResponse* resp) {
  const std::string target = absl::StrCat(req->session_id(), " to ", req->to_worker());
  return Call(*ctx, "Migrate", target, [&]() -> absl::Status {
    RSD_ASSIGN_OR_RETURN(
        *resp, core_.Migrate(req->session_id(), req->to_worker(), req->form(), DeadlineOf(*ctx)));
    return absl::OkStatus();
  });
}

grpc::Status AdminService::Failover(grpc::ServerContext* ctx, const v1::WorkerRequest* req,
                                    v1::FailoverResponse* resp) {
  return Call(*ctx, "Failover", req->worker(), [&]() -> absl::Status {
    RSD_ASSIGN_OR_RETURN(std::vector<v1::MigrateResponse> moved,
                         core_.Failover(req->worker(), DeadlineOf(*ctx)));
    for (v1::MigrateResponse& m : moved) *resp->add_moved() = std::move(m);
    absl::StatusOr<WorkerSnapshot> w = core_.registry().Get(req->worker());
    if (w.ok()) *resp->mutable_worker() = InfoOf(*w);
    return absl::OkStatus();
  });
}

}  // namespace rsd::router
