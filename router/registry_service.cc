// rsd.v1.Registry: worker registration and heartbeats.
#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "router/router_service.h"
#include "storage/common/log.h"
#include "storage/common/tls.h"

namespace rsd::router {
namespace {

// A worker listening on a wildcard address ("0.0.0.0:7001", "[::]:7001", ":7001") is dialled at
// the host its registration came from.
std::string DialableAddress(const std::string& address, const std::string& peer) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return address;
  const std::string host = address.substr(0, colon);
  if (!host.empty() && host != "0.0.0.0" && host != "[::]" && host != "::") return address;
  // peer: "ipv4:127.0.0.1:54321" or "ipv6:[::1]:54321".
  std::string p = peer;
  if (absl::StartsWith(p, "ipv4:") || absl::StartsWith(p, "ipv6:")) p = p.substr(5);
  const size_t peer_colon = p.rfind(':');
  if (peer_colon == std::string::npos || peer_colon == 0) return address;
  return absl::StrCat(p.substr(0, peer_colon), address.substr(colon));
}

WorkerDescriptor DescriptorOf(const v1::WorkerStatus& s, const std::string& peer) {
  WorkerDescriptor d;
  d.id = s.id();
  d.address = DialableAddress(s.address(), peer);
  d.model = s.model();
  d.model_fingerprint = s.model_fingerprint();
  d.numerics_fingerprint = s.numerics_fingerprint();
  d.context_length = s.context_length();
  d.load.hot_bytes_total = s.load().hot_bytes_total();
  d.load.hot_bytes_free = s.load().hot_bytes_free();
  d.load.shared_bytes = s.load().shared_bytes();
  // A bounded index: at most 4,096 keys of 16 bytes per worker.
  for (int i = 0; i < s.prefix_keys_size() && i < 4096; ++i) {
    if (s.prefix_keys(i).size() == 16) d.prefix_keys.push_back(s.prefix_keys(i));
  }
  d.load.saved_bytes = s.load().saved_bytes();
  d.load.cold_bytes = s.load().cold_bytes();
  d.load.cold_saved_bytes = s.load().cold_saved_bytes();
  d.load.warm_bytes_total = s.load().warm_bytes_total();
  d.load.warm_bytes_free = s.load().warm_bytes_free();
  d.load.queue_depth = s.load().queue_depth();
  d.load.running = s.load().running();
  d.load.sessions = s.load().sessions();
  d.load.queue_limit = s.load().queue_limit();
  d.rates.prefill_tokens_per_s = s.rates().prefill_tokens_per_s();
  d.rates.residual_tokens_per_s = s.rates().residual_tokens_per_s();
  d.rates.kv_copy_tokens_per_s = s.rates().kv_copy_tokens_per_s();
  d.serving = s.serving();
  d.device_kind = s.device().kind();
  d.device_name = s.device().name();
  d.device_index = s.device().index();
  d.device_memory_total = s.device().memory_total();
  d.device_memory_limit = s.device().memory_limit();
  d.device_memory_used = s.device().memory_used();
  d.device_memory_bandwidth = s.device().memory_bandwidth();
  return d;
}

}  // namespace

grpc::Status RegistryService::Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                                       v1::RegisterResponse* resp) {
  const WorkerDescriptor d = DescriptorOf(req->status(), ctx->peer());
  if (absl::StatusOr<Principal> who =
          gate_.Registry(MetadataOf(*ctx, "authorization"), d.id, PeerNames(*ctx));
      !who.ok()) {
    log::Warn("registration refused", {{"worker", d.id.substr(0, 128)},
                                       {"peer", ctx->peer()},
                                       {"error", std::string(who.status().message())}});
    return ToGrpc(who.status());
  }
  absl::Status s = core_.registry().Register(d);
  if (!s.ok()) return ToGrpc(s);
  core_.WorkerRegistered(d.address);
  const std::vector<v1::SessionRef> reported(req->sessions().begin(), req->sessions().end());
  const std::vector<v1::SessionRef> drop = core_.SessionsToDrop(d.id, reported);
  core_.NoteBehind(d.id, reported, {req->session_turns().begin(), req->session_turns().end()});
  for (const v1::SessionRef& ref : drop) *resp->add_drop() = ref;
  log::Info("worker registered", {{"worker", d.id},
                                  {"address", d.address},
                                  {"model", d.model},
                                  {"sessions", std::to_string(req->sessions_size())},
                                  {"to_drop", std::to_string(drop.size())}});
  resp->set_heartbeat_interval_seconds(core_.options().heartbeat_interval_seconds);
  core_.NoteQuarantined(d.id,
                        {req->status().quarantined().begin(), req->status().quarantined().end()});
  return grpc::Status::OK;
}

grpc::Status RegistryService::Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                                        v1::HeartbeatResponse* resp) {
  const WorkerDescriptor d = DescriptorOf(req->status(), ctx->peer());
  if (absl::StatusOr<Principal> who =
          gate_.Registry(MetadataOf(*ctx, "authorization"), d.id, PeerNames(*ctx));
      !who.ok()) {
    return ToGrpc(who.status());
  }
  resp->set_reregister(!core_.registry().Heartbeat(d));
  if (!resp->reregister() && req->status().quarantined_size() > 0) {
    core_.NoteQuarantined(d.id,
                          {req->status().quarantined().begin(), req->status().quarantined().end()});
  }
  return grpc::Status::OK;
}

}  // namespace rsd::router
