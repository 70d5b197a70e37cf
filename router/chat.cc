// One turn through the router (DESIGN.md section 5, "Turn commit"): a retried turn id that the
// journal holds is replayed from it; otherwise the turn is relayed to the owning worker, token
// deltas streamed through as they arrive, and the worker's TurnDone journaled (synced) before it
// is relayed. The worker call inherits the client's deadline and cancellation.
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "router/router_service.h"
#include "storage/common/status.h"

namespace rsd::router {
namespace {

uint64_t RandomSeed() {
  // 64 bits from the CSPRNG behind session ids.
  const SessionId r = SessionId::Random();
  uint64_t seed = 0;
  std::memcpy(&seed, r.bytes().data(), sizeof(seed));
  return seed;
}

absl::Status Replay(const TurnRecord& t, const v1::TurnRequest& req, const SessionRecord& rec,
                    grpc::ServerWriter<v1::ChatEvent>* writer) {
  if (t.message != req.message()) {
    return absl::AlreadyExistsError(absl::StrCat("turn id '", req.turn_id(), "' of session ",
                                                 rec.id.ToHex(), " was committed as turn ", t.turn,
                                                 " with a different message"));
  }
  v1::ChatEvent delta;
  v1::TokenDelta* d = delta.mutable_delta();
  d->set_offset(0);
  d->mutable_tokens()->Assign(t.tokens.begin(), t.tokens.end());
  d->set_text_offset(0);
  d->set_text(t.text);
  v1::ChatEvent done;
  v1::TurnDone* td = done.mutable_done();
  td->set_turn(t.turn);
  td->set_finish_reason(t.finish_reason);
  td->mutable_usage()->set_prompt_tokens(t.prompt_tokens);
  td->mutable_usage()->set_completion_tokens(t.completion_tokens);
  td->mutable_usage()->set_history_tokens(t.history_tokens);
  td->mutable_tokens()->Assign(t.tokens.begin(), t.tokens.end());
  td->set_text(t.text);
  td->set_seed(t.seed);
  td->set_worker(t.worker);
  td->set_replayed(true);
  if (!writer->Write(delta) || !writer->Write(done)) {
    return absl::CancelledError(
        absl::StrCat("client went away during the replay of turn ", t.turn, " of session ",
                     rec.id.ToHex()));
  }
  return absl::OkStatus();
}

TurnRecord RecordOf(const v1::TurnRequest& req, const v1::TurnDone& done,
                    const std::vector<int32_t>& streamed_tokens, const std::string& streamed_text,
                    const std::string& owner) {
  TurnRecord t;
  t.turn = done.turn();
  t.turn_id = req.turn_id();
  t.message = req.message();
  t.seed = done.seed() != 0 ? done.seed() : req.sampling().seed();
  t.temperature = req.sampling().temperature();
  t.top_k = req.sampling().top_k();
  if (req.sampling().has_top_p()) t.top_p = req.sampling().top_p();
  if (req.has_max_tokens()) t.max_tokens = req.max_tokens();
  t.stop.assign(req.stop().begin(), req.stop().end());
  // TurnDone carries every token; the streamed ones are the fallback for a worker that leaves
  // them out.
  if (done.tokens_size() > 0 || streamed_tokens.empty()) {
    t.tokens.assign(done.tokens().begin(), done.tokens().end());
  } else {
    t.tokens = streamed_tokens;
  }
  t.text = !done.text().empty() || streamed_text.empty() ? done.text() : streamed_text;
  t.finish_reason = done.finish_reason();
  t.prompt_tokens = done.usage().prompt_tokens();
  t.completion_tokens = done.usage().completion_tokens();
  t.history_tokens = done.usage().history_tokens();
  t.worker = done.worker().empty() ? owner : done.worker();
  t.committed_unix_ms = absl::ToUnixMillis(absl::Now());
  return t;
}

}  // namespace

absl::Status RunChat(RouterCore& core, grpc::ServerContext* ctx, const v1::TurnRequest& req,
                     grpc::ServerWriter<v1::ChatEvent>* writer) {
  const std::string tenant = TenantOf(*ctx);
  RSD_ASSIGN_OR_RETURN(SessionRecord rec, core.LoadSession(req.session_id(), &tenant));
  if (!req.turn_id().empty()) {
    RSD_ASSIGN_OR_RETURN(std::optional<TurnRecord> committed,
                         core.journal().FindTurn(rec.id, req.turn_id()));
    if (committed.has_value()) return Replay(*committed, req, rec, writer);
  }
  RSD_ASSIGN_OR_RETURN(WorkerSnapshot owner, core.Owner(rec));

  v1::WorkerChatRequest wreq;
  *wreq.mutable_ref() = RouterCore::RefOf(rec);
  *wreq.mutable_turn() = req;
  wreq.mutable_turn()->set_session_id(rec.id.ToHex());
  if (!req.sampling().has_seed()) wreq.mutable_turn()->mutable_sampling()->set_seed(RandomSeed());

  // Deadline and cancellation propagate from the client's call to the worker's.
  std::unique_ptr<grpc::ClientContext> cctx = grpc::ClientContext::FromServerContext(*ctx);
  std::unique_ptr<grpc::ClientReader<v1::ChatEvent>> reader =
      core.WorkerStub(owner.desc.address)->Chat(cctx.get(), wreq);

  std::vector<int32_t> streamed_tokens;
  std::string streamed_text;
  bool done_sent = false;
  bool client_gone = false;
  absl::Status journal_error;
  v1::ChatEvent ev;
  while (reader->Read(&ev)) {
    if (ev.has_delta()) {
      streamed_tokens.insert(streamed_tokens.end(), ev.delta().tokens().begin(),
                             ev.delta().tokens().end());
      streamed_text += ev.delta().text();
      if (!client_gone && !writer->Write(ev)) {
        client_gone = true;
        cctx->TryCancel();
      }
    } else if (ev.has_done() && !done_sent && journal_error.ok()) {
      v1::TurnDone* done = ev.mutable_done();
      if (done->worker().empty()) done->set_worker(owner.desc.id);
      journal_error = core.journal().CommitTurn(
          rec.id, RecordOf(wreq.turn(), *done, streamed_tokens, streamed_text, owner.desc.id));
      if (journal_error.ok() && !client_gone) done_sent = writer->Write(ev);
    }
  }
  grpc::Status s = reader->Finish();
  if (!journal_error.ok()) {
    return absl::Status(journal_error.code(),
                        absl::StrCat("session ", rec.id.ToHex(), ": worker '", owner.desc.id,
                                     "' committed the turn but the router's journal did not: ",
                                     journal_error.message()));
  }
  if (done_sent) return absl::OkStatus();
  if (client_gone || ctx->IsCancelled()) {
    return absl::CancelledError(
        absl::StrCat("session ", rec.id.ToHex(), ": the client cancelled the turn"));
  }
  if (!s.ok()) return RouterCore::WorkerError(s, owner.desc.id, owner.desc.address);
  return absl::InternalError(absl::StrCat("worker '", owner.desc.id, "' ended the turn on session ",
                                          rec.id.ToHex(), " without a TurnDone"));
}

}  // namespace rsd::router
