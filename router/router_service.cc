#include "router/router_service.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "storage/common/status.h"

namespace rsd::router {

std::string TenantOf(const grpc::ServerContext& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("x-rsd-tenant");
  if (it == md.end() || it->second.empty()) return "default";
  return std::string(it->second.data(), it->second.size());
}

RouterCore::RouterCore(Journal* journal, Registry* registry, RouterOptions options)
    : journal_(journal), registry_(registry), options_(std::move(options)) {}

absl::Status RouterCore::LoadJournal() {
  RSD_ASSIGN_OR_RETURN(std::vector<SessionRecord> sessions, journal_->ListSessions());
  for (const SessionRecord& s : sessions) registry_->AddPlaced(s.worker, 1);
  return absl::OkStatus();
}

std::shared_ptr<v1::Worker::Stub> RouterCore::WorkerStub(const std::string& address) {
  absl::MutexLock lock(&mu_);
  auto it = stubs_.find(address);
  if (it != stubs_.end()) return it->second;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options_.max_message_bytes);
  args.SetMaxSendMessageSize(options_.max_message_bytes);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  std::shared_ptr<v1::Worker::Stub> stub(v1::Worker::NewStub(channel));
  stubs_.emplace(address, stub);
  return stub;
}

std::unique_ptr<grpc::ClientContext> RouterCore::WorkerContext(const grpc::ServerContext& ctx) {
  auto out = std::make_unique<grpc::ClientContext>();
  const auto cap = std::chrono::system_clock::now() +
                   std::chrono::milliseconds(absl::ToInt64Milliseconds(options_.worker_call_timeout));
  out->set_deadline(std::min(ctx.deadline(), cap));
  return out;
}

absl::StatusOr<SessionRecord> RouterCore::LoadSession(const std::string& hex,
                                                      const std::string* tenant) {
  RSD_ASSIGN_OR_RETURN(SessionId id, ParseSessionId(hex));
  RSD_ASSIGN_OR_RETURN(SessionRecord rec, journal_->GetSession(id));
  if (tenant != nullptr && rec.tenant != *tenant) {
    // The same answer as for an absent session: ids of other tenants are not revealed.
    return absl::NotFoundError(absl::StrCat("unknown session ", id.ToHex()));
  }
  return rec;
}

absl::StatusOr<WorkerSnapshot> RouterCore::Owner(const SessionRecord& session) {
  absl::StatusOr<WorkerSnapshot> w = registry_->Get(session.worker);
  if (!w.ok()) {
    return absl::UnavailableError(absl::StrCat("worker '", session.worker, "' owning session ",
                                               session.id.ToHex(), " is not registered"));
  }
  if (w->state == WorkerState::kDead) {
    return absl::UnavailableError(absl::StrCat(
        "worker '", session.worker, "' owning session ", session.id.ToHex(),
        " is dead (no heartbeat for ", static_cast<int64_t>(w->seconds_since_heartbeat), " s)"));
  }
  return w;
}

absl::Status RouterCore::WorkerError(const grpc::Status& s, const std::string& worker,
                                     const std::string& address) {
  if (s.ok()) return absl::OkStatus();
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return absl::UnavailableError(absl::StrCat("worker '", worker, "' at ", address,
                                               " is unavailable: ", s.error_message()));
  }
  return FromGrpc(s);
}

v1::SessionRef RouterCore::RefOf(const SessionRecord& session) {
  v1::SessionRef ref;
  ref.set_session_id(session.id.ToHex());
  ref.set_tenant(session.tenant);
  ref.set_epoch(session.epoch);
  return ref;
}

void RouterCore::FillOwnership(const SessionRecord& session, v1::SessionInfo* info) {
  info->set_session_id(session.id.ToHex());
  info->set_tenant(session.tenant);
  info->set_model(session.model);
  info->set_worker(session.worker);
  info->set_epoch(session.epoch);
  v1::SessionOptions* o = info->mutable_options();
  o->set_ttl_seconds(session.ttl_seconds);
  o->set_pin(session.pin);
  o->set_priority(session.priority);
}

absl::StatusOr<v1::SessionInfo> RouterCore::FromJournal(const SessionRecord& session) {
  RSD_ASSIGN_OR_RETURN(std::vector<TurnRecord> turns, journal_->ListTurns(session.id));
  v1::SessionInfo info;
  FillOwnership(session, &info);
  info.set_turns(turns.empty() ? 0 : turns.back().turn);
  info.set_token_count(turns.empty() ? 0 : turns.back().history_tokens);
  const int64_t last_ms = turns.empty() ? session.created_unix_ms : turns.back().committed_unix_ms;
  info.set_idle_seconds(std::max<double>(0, (absl::ToUnixMillis(absl::Now()) - last_ms) / 1e3));
  return info;
}

absl::StatusOr<v1::SessionInfo> RouterCore::Describe(const SessionRecord& session,
                                                     const grpc::ServerContext& ctx) {
  absl::StatusOr<WorkerSnapshot> owner = Owner(session);
  if (owner.ok()) {
    std::unique_ptr<grpc::ClientContext> cctx = WorkerContext(ctx);
    v1::SessionInfo info;
    grpc::Status s = WorkerStub(owner->desc.address)->DescribeSession(cctx.get(), RefOf(session),
                                                                      &info);
    if (s.ok()) {
      FillOwnership(session, &info);
      return info;
    }
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
      // The owner lost it (e.g. restarted on an empty data dir): the journal still knows it.
      RSD_ASSIGN_OR_RETURN(v1::SessionInfo info, FromJournal(session));
      info.set_state("missing");
      return info;
    }
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
        s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      return WorkerError(s, owner->desc.id, owner->desc.address);
    }
  }
  RSD_ASSIGN_OR_RETURN(v1::SessionInfo info, FromJournal(session));
  info.set_state("unreachable");
  return info;
}

}  // namespace rsd::router
