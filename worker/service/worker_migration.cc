// The worker's side of migration: exporting a session's state as a stream, importing one, and
// sending one straight to another worker (SendSession). Split from worker_service.cc by concern.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "proto/state_stream.h"
#include "storage/common/crash_point.h"
#include "storage/common/log.h"
#include "storage/common/status.h"
#include "worker/service/worker_service.h"

namespace rsd {

grpc::Status WorkerService::ExportFor(const v1::ExportSessionRequest& req, SessionState* state) {
  absl::StatusOr<SpillForm> form = ParseSpillForm(req.form().empty() ? "auto" : req.form());
  if (!form.ok()) return ToGrpc(form.status());
  return WithSession(req.ref(), true, [&](const SessionId& id) -> absl::Status {
    if (scheduler_->HasTurn(id)) {
      return absl::FailedPreconditionError(
          absl::StrCat("session ", id.ToHex(), " has a turn running on worker ", options_.id,
                       "; export at a turn boundary"));
    }
    RSD_ASSIGN_OR_RETURN(*state, sessions_->ExportState(id, *form));
    if (req.target_epoch() != 0) state->attrs.epoch = req.target_epoch();
    return absl::OkStatus();
  });
}

grpc::Status WorkerService::ExportSession(grpc::ServerContext* ctx,
                                          const v1::ExportSessionRequest* req,
                                          grpc::ServerWriter<v1::StateChunk>* writer) {
  SessionState state;
  grpc::Status st = ExportFor(*req, &state);
  if (!st.ok()) return st;
  const uint64_t epoch = state.attrs.epoch;
  return ToGrpc(WriteStateStream(std::move(state), epoch, [&](const v1::StateChunk& chunk) {
    return !ctx->IsCancelled() && writer->Write(chunk);
  }));
}

namespace {

// `state` without the blocks of its first `chunks` chunks, which the importer holds (`state` is
// left as it was).
SessionState WithoutLeadingChunks(SessionState& state, int32_t chunks) {
  std::vector<SessionState::Block> blocks = std::move(state.blocks);
  SessionState out = state;  // every field but the blocks
  state.blocks = std::move(blocks);
  out.shared_chunks = chunks;
  for (const SessionState::Block& b : state.blocks) {
    if (b.chunk >= static_cast<uint32_t>(chunks)) out.blocks.push_back(b);
  }
  return out;
}

// How many of the state's leading chunks the target holds (0 where it cannot say: an older worker,
// or none; the stream then carries them all).
int32_t HeldByTarget(v1::Worker::Stub& stub, const SessionState& state,
                     std::chrono::system_clock::time_point deadline) {
  const std::optional<v1::HeldPrefixRequest> offer =
      HeldPrefixOffer(StateHeaderOf(state, state.attrs.epoch));
  if (!offer) return 0;
  grpc::ClientContext cctx;
  cctx.set_deadline(std::min(deadline, std::chrono::system_clock::now() + std::chrono::seconds(5)));
  v1::HeldPrefixResponse resp;
  const grpc::Status st = stub.HeldPrefix(&cctx, *offer, &resp);
  if (!st.ok()) return 0;
  return std::clamp(resp.chunks(), 0, state.n_chunks);
}

// Imports are refused message by message past what this worker could hold: a log over its
// context, more blocks than the header's chunks, a block larger than a block of its rows (with
// room for the codec's framing).
StateStreamLimits ImportLimits(const StateLayout& layout) {
  StateStreamLimits limits;
  limits.max_tokens = layout.max_tokens;
  limits.max_block_bytes =
      int64_t{layout.block_tokens} * std::max(layout.kv_dim * 2 * 2, layout.d_model * 4) +
      (64 << 10);
  return limits;
}

// Streams `state` into the target's ImportSession; its answer in `out`.
grpc::Status StreamTo(v1::Worker::Stub& stub, grpc::ServerContext* ctx, SessionState state,
                      v1::ImportSessionResponse* out) {
  grpc::ClientContext cctx;
  cctx.set_deadline(ctx->deadline());
  std::unique_ptr<grpc::ClientWriter<v1::StateChunk>> writer = stub.ImportSession(&cctx, out);
  const uint64_t epoch = state.attrs.epoch;
  // A write the target refuses ends the stream early; its Finish says why.
  (void)WriteStateStream(std::move(state), epoch, [&](const v1::StateChunk& chunk) {
    return !ctx->IsCancelled() && writer->Write(chunk);
  });
  // Every chunk sent, the end of the stream not yet: the target must not keep a session whose
  // sender died here.
  CrashPoint("send-session:unfinished");
  if (ctx->IsCancelled()) cctx.TryCancel();
  writer->WritesDone();
  return writer->Finish();
}

}  // namespace

grpc::Status WorkerService::SendSession(grpc::ServerContext* ctx, const v1::SendSessionRequest* req,
                                        v1::ImportSessionResponse* out) {
  if (req->target_address().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "SendSession needs the target worker's address");
  }
  if (req->target_worker() == options_.id ||
      (!options_.address.empty() && req->target_address() == options_.address)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("worker '", options_.id, "' cannot send a session to itself"));
  }
  SessionState state;
  grpc::Status st = ExportFor(req->source(), &state);
  if (!st.ok()) return st;
  const std::string target =
      absl::StrCat("target worker '", req->target_worker(), "' at ", req->target_address());
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(16 << 20);
  auto stub = v1::Worker::NewStub(grpc::CreateCustomChannel(
      req->target_address(),
      options_.peer_credentials ? options_.peer_credentials : grpc::InsecureChannelCredentials(),
      args));
  // Deduplicated migration: the chunks the target holds stay out of the stream; if it no longer
  // holds them when the stream arrives (ABORTED) the session goes again, whole.
  const int32_t held = HeldByTarget(*stub, state, ctx->deadline());
  grpc::Status s;
  if (held > 0) {
    s = StreamTo(*stub, ctx, WithoutLeadingChunks(state, held), out);
    if (s.error_code() == grpc::StatusCode::ABORTED) {
      log::Info("the target no longer holds the shared chunks: sending the session whole",
                {{"session", state.id.ToHex()}, {"target", target}, {"error", s.error_message()}});
    }
  }
  if (held == 0 || s.error_code() == grpc::StatusCode::ABORTED) {
    *out = v1::ImportSessionResponse();
    s = StreamTo(*stub, ctx, std::move(state), out);
  }
  if (s.ok()) return s;
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return grpc::Status(
        grpc::StatusCode::UNAVAILABLE,
        absl::StrCat("worker '", options_.id, "' cannot reach ", target, ": ", s.error_message()));
  }
  return grpc::Status(s.error_code(), absl::StrCat(target, ": ", s.error_message()));
}

constexpr size_t kMaxTenantBytes = 128;  // as the router accepts

grpc::Status WorkerService::HeldPrefix(grpc::ServerContext*, const v1::HeldPrefixRequest* req,
                                       v1::HeldPrefixResponse* out) {
  const StateLayout& layout = engine_->state_layout();
  const int64_t most_chunks =
      layout.max_tokens > 0 ? layout.max_tokens / std::max(layout.block_tokens, 1) : 1 << 20;
  const auto refuse = [](const std::string& why) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, absl::StrCat("HeldPrefix: ", why));
  };
  if (req->tenant().size() > kMaxTenantBytes) {
    return refuse(absl::StrCat("a tenant of ", req->tenant().size(), " bytes (at most ",
                               kMaxTenantBytes, ")"));
  }
  if (req->keys_size() > most_chunks) {
    return refuse(absl::StrCat(req->keys_size(), " chunk keys; a session here has at most ",
                               most_chunks, " chunks"));
  }
  for (int i = 0; i < req->keys_size(); ++i) {
    if (req->keys(i).size() != 16) {
      return refuse(absl::StrCat("chunk key ", i, " is ", req->keys(i).size(), " bytes, not 16"));
    }
  }
  absl::StatusOr<LayerPlan> plan = LayerPlan::Parse(req->layer_forms(), layout.n_layers);
  if (!plan.ok()) return refuse(std::string(plan.status().message()));
  SessionId except;
  if (!req->session_id().empty()) {
    absl::StatusOr<SessionId> id = ParseSessionId(req->session_id());
    if (!id.ok()) return refuse(std::string(id.status().message()));
    except = *id;
  }
  const std::string tenant = req->tenant().empty() ? "default" : req->tenant();
  const std::vector<std::string> keys(req->keys().begin(), req->keys().end());
  scheduler_->RunSync([&] { out->set_chunks(sessions_->HeldChunks(tenant, except, keys, *plan)); });
  return grpc::Status::OK;
}

grpc::Status WorkerService::ImportSession(grpc::ServerContext* ctx,
                                          grpc::ServerReader<v1::StateChunk>* reader,
                                          v1::ImportSessionResponse* out) {
  StateStreamReader stream(ImportLimits(engine_->state_layout()));
  v1::StateChunk chunk;
  while (reader->Read(&chunk)) {
    absl::Status added = stream.Add(std::move(chunk));
    if (!added.ok()) return ToGrpc(added);
  }
  // A read also ends when the sender goes away; only a stream it ended itself is whole.
  if (ctx->IsCancelled()) {
    ++imports_cut_;
    log::Warn("import cut short by its sender: nothing kept", {{"worker", options_.id}});
    return grpc::Status(grpc::StatusCode::CANCELLED,
                        "import: the sender went away before it ended the stream; nothing kept");
  }
  absl::StatusOr<SessionState> received = stream.Finish();
  if (!received.ok()) return ToGrpc(received.status());
  CrashPoint("import:received");
  const SessionState& state = *received;
  const int64_t wire = stream.wire_bytes();
  const SessionId* id = &state.id;
  absl::Status st;
  scheduler_->RunSync([&] {
    if (scheduler_->HasTurn(state.id)) {
      st = absl::FailedPreconditionError(
          absl::StrCat("session ", state.id.ToHex(), " has a turn running here"));
      return;
    }
    absl::StatusOr<ImportReport> report = sessions_->ImportState(state);
    if (!report.ok()) {
      st = report.status();
      return;
    }
    out->set_form(SpillFormName(report->form));
    out->set_note(report->note);
    out->set_blocks(report->blocks);
    out->set_payload_bytes(report->payload_bytes);
    out->set_framing_bytes(report->framing_bytes);
    out->set_token_bytes(static_cast<int64_t>(state.tokens.size()) * 4);
    out->set_shared_tokens(report->shared_tokens);
    st = FillInfo(state.id, out->mutable_session());
  });
  if (!st.ok()) return ToGrpc(st);
  CrashPoint("import:committed");  // durable here, the answer not yet sent
  {
    std::lock_guard<std::mutex> lock(turns_mu_);
    committed_.erase(id->ToHex());  // turn ids are answered by the router's journal after a move
  }
  out->set_wire_bytes(wire);
  if (!out->note().empty()) {
    log::Info("session imported",
              {{"worker", options_.id}, {"session", id->ToHex()}, {"note", out->note()}});
  }
  return grpc::Status::OK;
}

}  // namespace rsd
