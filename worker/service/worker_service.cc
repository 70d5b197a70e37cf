#include "worker/service/worker_service.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "proto/state_stream.h"
#include "storage/common/clock.h"
#include "storage/common/hash.h"
#include "storage/common/log.h"
#include "storage/common/status.h"
#include "worker/engine/turn_decoder.h"
#include "worker/model/unicode.h"

namespace rsd {
namespace {

TurnInput InputOf(const v1::TurnRequest& turn) {
  TurnInput input;
  input.user_text = turn.message();
  input.raw = turn.raw();
  for (const v1::ChatMessage& m : turn.context()) {
    input.context.push_back(ChatMessage{m.role(), m.content()});
  }
  return input;
}

std::string StateOf(const SessionInfo& info) {
  if (info.resident) return "hot";
  if (info.spilled == SpillForm::kNone) return info.turns == 0 ? "new" : "hot";
  return absl::StrCat("spilled:", SpillFormName(info.spilled));
}

}  // namespace

WorkerService::WorkerService(Engine* engine, SessionManager* sessions, Scheduler* scheduler,
                             WorkerServiceOptions options)
    : engine_(engine), sessions_(sessions), scheduler_(scheduler), options_(std::move(options)) {
  const DeviceInfo d = engine_->backend().device_info();
  device_.set_kind(d.kind);
  device_.set_name(d.name);
  device_.set_index(d.index);
  device_.set_memory_total(static_cast<int64_t>(d.memory_total));
  device_.set_memory_limit(static_cast<int64_t>(d.memory_limit));
  device_.set_memory_bandwidth(d.memory_bandwidth);
}

void WorkerService::MeasureRates() {
  scheduler_->RunSync([&] {
    // Re-prefill from tokens: one 64-token prompt through the model.
    const SessionId seq = engine_->CreateSequence();
    std::vector<int32_t> toks(64, engine_->tokenizer().spec().bos_id >= 0
                                      ? engine_->tokenizer().spec().bos_id
                                      : 0);
    engine_->AppendPending(seq, toks);
    const double t0 = MonotonicSeconds();
    absl::Status st = engine_->FlushPending(seq);
    const double dt = MonotonicSeconds() - t0;
    engine_->DestroySequence(seq);
    if (st.ok() && dt > 0) rates_.set_prefill_tokens_per_s(64.0 / dt);
    const double rebuild = engine_->planner_rebuild_seconds();
    const int bt = engine_->model().block_tokens();
    if (rebuild > 0) {
      rates_.set_residual_tokens_per_s(bt / (rebuild * engine_->config().n_layers));
    }
    const double bw = engine_->planner_bytes_per_second();
    const StateBytesPerToken bpt = engine_->model().state_bytes_per_token();
    if (bw > 0 && bpt.kv > 0) rates_.set_kv_copy_tokens_per_s(bw / static_cast<double>(bpt.kv));
  });
}

v1::WorkerStatus WorkerService::Status() {
  v1::WorkerStatus st;
  st.set_id(options_.id);
  st.set_address(options_.address);
  st.set_model(options_.model_name);
  st.set_model_fingerprint(engine_->model_fingerprint());
  st.set_numerics_fingerprint(engine_->numerics_fingerprint());
  st.set_context_length(static_cast<int32_t>(engine_->model().max_context()));
  *st.mutable_rates() = rates_;
  *st.mutable_device() = device_;
  st.mutable_device()->set_memory_used(scheduler_->stats().device_memory_used);
  const SchedulerStats s = scheduler_->stats();
  v1::WorkerLoad* load = st.mutable_load();
  const int64_t block_bytes = static_cast<int64_t>(engine_->pool().block_bytes());
  // Pool numbers as the compute thread last published them (capacity never changes).
  load->set_hot_bytes_total(engine_->pool().capacity() * block_bytes);
  load->set_hot_bytes_free((engine_->pool().capacity() - s.hot_blocks_used) * block_bytes);
  load->set_shared_bytes(s.hot_blocks_shared * block_bytes);
  load->set_saved_bytes(s.hot_blocks_saved * block_bytes);
  load->set_warm_bytes_total(static_cast<int64_t>(sessions_->warm_budget()));
  load->set_warm_bytes_free(static_cast<int64_t>(sessions_->warm_budget()) -
                            static_cast<int64_t>(sessions_->warm_bytes()));
  const ColdStore::ContentStats cold = sessions_->cold_stats();
  load->set_cold_bytes(cold.bytes);
  load->set_cold_saved_bytes(cold.referenced_bytes - cold.bytes);
  load->set_queue_depth(s.queue_depth);
  load->set_running(s.running);
  load->set_queue_limit(scheduler_->options().max_queue);
  load->set_sessions(s.sessions);
  v1::SchedulerCounters* c = st.mutable_counters();
  c->set_steps(s.steps);
  c->set_decode_rows(s.decode_rows);
  c->set_decode_steps(s.decode_steps);
  c->set_prefill_tokens(s.prefill_tokens);
  c->set_turns_committed(s.committed);
  c->set_turns_cancelled(s.cancelled);
  c->set_turns_failed(s.failed);
  c->set_turns_refused(s.refused);
  c->set_spills(s.spills);
  c->set_restores(s.restores);
  c->set_paused_steps(s.paused_steps);
  c->set_max_decode_rows(s.max_decode_rows);
  c->set_max_cancel_steps(s.max_cancel_steps);
  c->set_commit_groups(s.commit_groups);
  st.set_serving(scheduler_->Healthy());
  for (std::string& key : scheduler_->PrefixSummary()) st.add_prefix_keys(std::move(key));
  for (const SessionManager::Quarantined& q : sessions_->QuarantinedSessions()) {
    v1::SessionRef* r = st.add_quarantined();
    r->set_session_id(q.id.ToHex());
    r->set_tenant(q.tenant);
    r->set_epoch(q.epoch);
  }
  return st;
}

absl::Status WorkerService::FillInfo(const SessionId& id, v1::SessionInfo* out) {
  RSD_ASSIGN_OR_RETURN(SessionInfo info, sessions_->Describe(id));
  out->set_session_id(id.ToHex());
  out->set_tenant(info.attrs.tenant);
  out->set_model(options_.model_name);
  out->set_worker(options_.id);
  out->set_epoch(info.attrs.epoch);
  out->set_turns(info.turns);
  out->set_token_count(info.token_count);
  out->mutable_bytes()->set_hot(static_cast<int64_t>(info.hot_blocks) *
                                static_cast<int64_t>(engine_->pool().block_bytes()));
  out->set_blocks(info.hot_blocks);
  out->set_shared_blocks(info.shared_blocks);
  out->mutable_bytes()->set_warm(static_cast<int64_t>(sessions_->WarmBytes(id)));
  absl::StatusOr<int64_t> cold = sessions_->ColdBytes(id);
  out->mutable_bytes()->set_cold(cold.ok() ? *cold : 0);
  out->mutable_options()->set_ttl_seconds(info.attrs.ttl_seconds);
  out->mutable_options()->set_pin(info.attrs.pin);
  out->mutable_options()->set_priority(info.attrs.priority);
  out->set_state(scheduler_->HasTurn(id) ? "running" : StateOf(info));
  out->set_idle_seconds(info.idle_seconds);
  return absl::OkStatus();
}

grpc::Status WorkerService::WithSession(const v1::SessionRef& ref, bool check_epoch,
                                        const std::function<absl::Status(const SessionId&)>& fn) {
  absl::StatusOr<SessionId> id = ParseSessionId(ref.session_id());
  if (!id.ok()) return ToGrpc(id.status());
  absl::Status result;
  scheduler_->RunSync([&] {
    absl::StatusOr<SessionInfo> info = sessions_->Describe(*id);
    if (!info.ok() || info->attrs.tenant != (ref.tenant().empty() ? "default" : ref.tenant())) {
      result = absl::NotFoundError(absl::StrCat("unknown session ", id->ToHex(), " on worker ",
                                                options_.id));
      return;
    }
    if (check_epoch && ref.epoch() != 0 && info->attrs.epoch != ref.epoch()) {
      result = absl::FailedPreconditionError(
          absl::StrCat("session ", id->ToHex(), " is at epoch ", info->attrs.epoch,
                       " on worker ", options_.id, ", not ", ref.epoch(), " (stale owner)"));
      return;
    }
    result = fn(*id);
  });
  return ToGrpc(result);
}

grpc::Status WorkerService::OpenSession(grpc::ServerContext*, const v1::OpenSessionRequest* req,
                                        v1::SessionInfo* out) {
  absl::StatusOr<SessionId> id = ParseSessionId(req->ref().session_id());
  if (!id.ok()) return ToGrpc(id.status());
  if (!req->model().empty() && req->model() != options_.model_name) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("worker ", options_.id, " serves model '", options_.model_name,
                                     "', not '", req->model(), "'"));
  }
  SessionAttrs attrs;
  attrs.tenant = req->ref().tenant().empty() ? "default" : req->ref().tenant();
  attrs.epoch = req->ref().epoch();
  attrs.ttl_seconds = req->options().ttl_seconds();
  attrs.pin = req->options().pin();
  attrs.priority = req->options().priority();
  absl::Status st;
  scheduler_->RunSync([&] {
    st = sessions_->Create(*id, attrs);
    if (st.code() == absl::StatusCode::kPermissionDenied) {
      st = absl::AlreadyExistsError(absl::StrCat("session ", id->ToHex(), " exists"));
    }
    if (st.ok()) st = FillInfo(*id, out);
  });
  return ToGrpc(st);
}

grpc::Status WorkerService::ValidateTurn(const v1::TurnRequest& turn,
                                         GenerateParams* params) const {
  auto invalid = [](std::string msg) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(msg));
  };
  if (turn.message().empty()) return invalid("the message is empty");
  if (turn.message().size() > options_.max_message_bytes) {
    return invalid(absl::StrCat("the message has ", turn.message().size(),
                                " bytes; this worker accepts at most ", options_.max_message_bytes));
  }
  if (!IsValidUtf8(turn.message())) return invalid("the message is not valid UTF-8");
  size_t context_bytes = 0;
  for (int i = 0; i < turn.context_size(); ++i) {
    const v1::ChatMessage& m = turn.context(i);
    context_bytes += m.content().size() + m.role().size();
    if (!IsValidUtf8(m.content())) {
      return invalid(absl::StrCat("context message ", i, " is not valid UTF-8"));
    }
  }
  if (context_bytes > options_.max_message_bytes) {
    return invalid(absl::StrCat("the context messages have ", context_bytes,
                                " bytes; this worker accepts at most ",
                                options_.max_message_bytes));
  }
  if (turn.stop_size() > options_.max_stop_strings) {
    return invalid(absl::StrCat(turn.stop_size(), " stop strings; at most ",
                                options_.max_stop_strings));
  }
  for (const std::string& s : turn.stop()) {
    if (s.empty() || s.size() > options_.max_stop_bytes || !IsValidUtf8(s)) {
      return invalid(absl::StrCat("a stop string must be 1 to ", options_.max_stop_bytes,
                                  " bytes of UTF-8"));
    }
    params->stop.push_back(s);
  }
  const int64_t context = engine_->model().max_context();
  if (turn.has_max_tokens()) {
    if (turn.max_tokens() < 0 || turn.max_tokens() > context) {
      return invalid(absl::StrCat("max_tokens ", turn.max_tokens(), " is outside [0, ", context,
                                  "] (the context length)"));
    }
    params->max_tokens = turn.max_tokens();
  } else {
    params->max_tokens = options_.default_max_tokens;
  }
  const v1::SamplingParams& sp = turn.sampling();
  params->sampling.temperature = sp.temperature();
  params->sampling.top_k = sp.top_k();
  params->sampling.top_p = sp.has_top_p() ? sp.top_p() : 1.0f;
  params->sampling.seed = sp.seed();  // without one, the scheduler draws it
  absl::Status st = ValidateSamplingParams(params->sampling);
  if (!st.ok()) return ToGrpc(st);
  return grpc::Status::OK;
}

grpc::Status WorkerService::Chat(grpc::ServerContext* ctx, const v1::WorkerChatRequest* req,
                                 grpc::ServerWriter<v1::ChatEvent>* writer) {
  const v1::TurnRequest& turn = req->turn();
  absl::StatusOr<SessionId> id = ParseSessionId(
      req->ref().session_id().empty() ? turn.session_id() : req->ref().session_id());
  if (!id.ok()) return ToGrpc(id.status());
  GenerateParams params;
  grpc::Status valid = ValidateTurn(turn, &params);
  if (!valid.ok()) return valid;
  const std::string key = absl::StrCat(id->ToHex(), "/", turn.turn_id());
  if (!turn.turn_id().empty()) {
    std::lock_guard<std::mutex> lock(turns_mu_);
    if (ReplayLocked(*id, turn.turn_id(), writer)) return grpc::Status::OK;
    if (!in_flight_.insert(key).second) {
      return grpc::Status(grpc::StatusCode::ABORTED,
                          absl::StrCat("turn ", turn.turn_id(), " of session ", id->ToHex(),
                                       " is already running; retry when it ends"));
    }
  }
  struct InFlight {
    WorkerService* self;
    std::string key;
    bool active;
    ~InFlight() {
      if (!active) return;
      std::lock_guard<std::mutex> lock(self->turns_mu_);
      self->in_flight_.erase(key);
    }
  } in_flight{this, key, !turn.turn_id().empty()};

  TurnSpec spec;
  spec.id = *id;
  spec.tenant = req->ref().tenant().empty() ? "default" : req->ref().tenant();
  spec.epoch = req->ref().epoch();
  if (req->has_committed_turns()) spec.committed_turns = req->committed_turns();
  spec.input = InputOf(turn);
  spec.params = params;
  spec.draw_seed = !turn.sampling().has_seed();
  absl::StatusOr<std::shared_ptr<TurnStream>> stream = scheduler_->Submit(std::move(spec));
  if (!stream.ok()) return ToGrpc(stream.status());
  return Relay(ctx, **stream, *id, turn.turn_id(), writer);
}

grpc::Status WorkerService::PromptKeys(grpc::ServerContext*, const v1::PromptKeysRequest* req,
                                       v1::PromptKeysResponse* out) {
  GenerateParams params;
  if (grpc::Status valid = ValidateTurn(req->turn(), &params); !valid.ok()) return valid;
  TurnInput input = InputOf(req->turn());
  if (absl::Status st = ChatTemplate::CheckContext(input.context, true); !st.ok()) {
    return ToGrpc(st);
  }
  // The tokenizer and template are immutable: no need for the compute thread.
  const std::string tenant = req->tenant().empty() ? "default" : req->tenant();
  for (const SessionManager::PrefixKey& k : sessions_->PromptPrefixKeys(tenant, input)) {
    v1::PrefixKey* key = out->add_keys();
    key->set_key(k.key);
    key->set_tokens(k.tokens);
  }
  return grpc::Status::OK;
}

bool WorkerService::ReplayLocked(const SessionId& id, const std::string& turn_id,
                                 grpc::ServerWriter<v1::ChatEvent>* writer) {
  for (const auto& [tid, done] : committed_[id.ToHex()]) {
    if (tid != turn_id) continue;
    // A retried turn id: the committed answer again, nothing appended.
    v1::ChatEvent ev;
    ev.mutable_delta()->mutable_tokens()->CopyFrom(done.tokens());
    ev.mutable_delta()->set_text(done.text());
    writer->Write(ev);
    v1::ChatEvent fin;
    *fin.mutable_done() = done;
    fin.mutable_done()->set_replayed(true);
    writer->Write(fin);
    return true;
  }
  return false;
}

grpc::Status WorkerService::Relay(grpc::ServerContext* ctx, TurnStream& stream, const SessionId& id,
                                  const std::string& turn_id,
                                  grpc::ServerWriter<v1::ChatEvent>* writer) {
  bool cancelled = false;
  for (;;) {
    TurnEvent ev;
    if (!stream.Next(&ev, 0.005)) {
      if (!cancelled && ctx->IsCancelled()) {  // client gone or deadline passed
        stream.Cancel();
        cancelled = true;
      }
      continue;
    }
    if (ev.kind == TurnEvent::Kind::kError) return ToGrpc(ev.status);
    v1::ChatEvent out;
    if (ev.kind == TurnEvent::Kind::kDelta) {
      v1::TokenDelta* d = out.mutable_delta();
      d->set_offset(ev.offset);
      for (int32_t t : ev.tokens) d->add_tokens(t);
      d->set_text_offset(ev.text_offset);
      d->set_text(ev.text);
      if (!cancelled && !writer->Write(out)) {
        stream.Cancel();
        cancelled = true;
      }
      continue;
    }
    // Committed (synced to RocksDB): the final message.
    *out.mutable_done() = DoneOf(ev);
    if (metrics_ != nullptr) metrics_->Turn(out.done());
    if (!turn_id.empty()) {
      std::lock_guard<std::mutex> lock(turns_mu_);
      auto& q = committed_[id.ToHex()];
      q.emplace_back(turn_id, out.done());
      while (static_cast<int>(q.size()) > options_.replay_turns) q.pop_front();
    }
    writer->Write(out);
    return grpc::Status::OK;
  }
}

v1::TurnDone WorkerService::DoneOf(const TurnEvent& ev) const {
  const TurnResult& r = ev.result;
  v1::TurnDone done;
  done.set_turn(r.turn);
  done.set_finish_reason(r.generation.finish_reason);
  done.mutable_usage()->set_prompt_tokens(r.generation.prompt_tokens);
  done.mutable_usage()->set_reused_tokens(r.reused_tokens);
  done.mutable_usage()->set_completion_tokens(static_cast<int64_t>(r.generation.tokens.size()));
  for (int32_t t : r.generation.tokens) done.add_tokens(t);
  for (int32_t t : r.turn_tokens) done.add_log_tokens(t);
  done.set_text(Utf8Stream().Finish(r.generation.text));
  done.set_seed(r.seed);
  done.set_worker(options_.id);
  done.set_restored_from(r.restored_from);
  done.set_queue_seconds(ev.queue_seconds);
  done.set_prefill_seconds(r.generation.prefill_seconds);
  done.set_decode_seconds(r.generation.decode_seconds);
  done.mutable_usage()->set_history_tokens(r.history_tokens);
  return done;
}

grpc::Status WorkerService::DescribeSession(grpc::ServerContext*, const v1::SessionRef* req,
                                            v1::SessionInfo* out) {
  return WithSession(*req, false, [&](const SessionId& id) { return FillInfo(id, out); });
}

grpc::Status WorkerService::CloseSession(grpc::ServerContext*, const v1::SessionRef* req,
                                         v1::SessionInfo* out) {
  return WithSession(*req, true, [&](const SessionId& id) -> absl::Status {
    if (scheduler_->HasTurn(id)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "session ", id.ToHex(), " has a turn running; cancel it or wait before closing"));
    }
    RSD_RETURN_IF_ERROR(FillInfo(id, out));
    RSD_RETURN_IF_ERROR(sessions_->Close(id, /*keep_prefix=*/true));
    std::lock_guard<std::mutex> lock(turns_mu_);
    committed_.erase(id.ToHex());
    return absl::OkStatus();
  });
}

grpc::Status WorkerService::UndoTurn(grpc::ServerContext*, const v1::SessionRef* req,
                                     v1::SessionInfo* out) {
  return WithSession(*req, true, [&](const SessionId& id) -> absl::Status {
    if (scheduler_->HasTurn(id)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "session ", id.ToHex(), " has a turn running; undo applies to committed turns"));
    }
    RSD_RETURN_IF_ERROR(sessions_->Undo(id));
    {
      std::lock_guard<std::mutex> lock(turns_mu_);
      auto& q = committed_[id.ToHex()];
      if (!q.empty()) q.pop_back();
    }
    return FillInfo(id, out);
  });
}

grpc::Status WorkerService::ListSessions(grpc::ServerContext*,
                                         const v1::WorkerListSessionsRequest*,
                                         v1::WorkerListSessionsResponse* out) {
  absl::Status st;
  scheduler_->RunSync([&] {
    for (const SessionInfo& info : sessions_->List()) {
      st.Update(FillInfo(info.id, out->add_sessions()));
    }
  });
  return ToGrpc(st);
}

grpc::Status WorkerService::GetStatus(grpc::ServerContext*, const v1::WorkerStatusRequest*,
                                      v1::WorkerStatus* out) {
  *out = Status();
  return grpc::Status::OK;
}

std::vector<v1::SessionRef> WorkerService::SessionRefs(std::vector<uint32_t>* turns) {
  std::vector<v1::SessionRef> refs;
  scheduler_->RunSync([&] {
    for (const SessionInfo& info : sessions_->List()) {
      v1::SessionRef r;
      r.set_session_id(info.id.ToHex());
      r.set_tenant(info.attrs.tenant);
      r.set_epoch(info.attrs.epoch);
      refs.push_back(r);
      if (turns != nullptr) turns->push_back(info.turns);
    }
  });
  return refs;
}

void WorkerService::Drop(const google::protobuf::RepeatedPtrField<v1::SessionRef>& refs) {
  for (const v1::SessionRef& ref : refs) {
    absl::StatusOr<SessionId> id = ParseSessionId(ref.session_id());
    if (!id.ok()) continue;
    absl::Status st;
    scheduler_->RunSync([&] {
      absl::StatusOr<SessionInfo> info = sessions_->Describe(*id);
      // Only the copy the router named (same or older epoch): never a newer one.
      if (!info.ok() || info->attrs.epoch > ref.epoch() || scheduler_->HasTurn(*id)) return;
      st = sessions_->Close(*id);
    });
    log::Info("dropped a session the router says is no longer ours",
              {{"worker", options_.id},
               {"session", ref.session_id()},
               {"epoch", std::to_string(ref.epoch())},
               {"result", st.ok() ? "dropped" : st.ToString()}});
  }
}

}  // namespace rsd
