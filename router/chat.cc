// One turn through the router (DESIGN.md section 5, "Turn commit"): a retried turn id that the
// journal holds is replayed from it; otherwise the turn is relayed to the owning worker, token
// deltas streamed through as they arrive, and the worker's TurnDone journaled (synced) before it
// is relayed. The worker call inherits the client's deadline and cancellation.
#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "router/request_limits.h"
#include "router/router_core.h"
#include "storage/common/status.h"

namespace rsd::router {
namespace {

using Write = std::function<bool(const v1::ChatEvent&)>;

absl::Status Replay(const TurnRecord& t, const v1::TurnRequest& req, const SessionRecord& rec,
                    const Write& write) {
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
  td->mutable_usage()->set_reused_tokens(t.reused_tokens);
  td->mutable_tokens()->Assign(t.tokens.begin(), t.tokens.end());
  td->set_text(t.text);
  td->set_seed(t.seed);
  td->set_worker(t.worker);
  td->set_replayed(true);
  if (!write(delta) || !write(done)) {
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
  t.reused_tokens = done.usage().reused_tokens();
  t.worker = done.worker().empty() ? owner : done.worker();
  t.committed_unix_ms = absl::ToUnixMillis(absl::Now());
  t.log_tokens.assign(done.log_tokens().begin(), done.log_tokens().end());
  return t;
}

PendingRecord PendingOf(const v1::TurnRequest& turn) {
  PendingRecord p;
  p.turn_id = turn.turn_id();
  p.message = turn.message();
  p.seed = turn.sampling().seed();
  p.temperature = turn.sampling().temperature();
  p.top_k = turn.sampling().top_k();
  if (turn.sampling().has_top_p()) p.top_p = turn.sampling().top_p();
  if (turn.has_max_tokens()) p.max_tokens = turn.max_tokens();
  p.stop.assign(turn.stop().begin(), turn.stop().end());
  p.started_unix_ms = absl::ToUnixMillis(absl::Now());
  return p;
}

// One attempt of a turn on the owner: the outcome, and whether it may be tried again (nothing was
// relayed to the client and the worker could not be reached or died).
struct Attempt {
  absl::Status status;
  bool retry = false;
};

// What a relayed turn came to: whether anything reached the client, whether the TurnDone did,
// and why it ended otherwise.
struct Relayed {
  bool relayed = false;
  bool done_sent = false;
  bool client_gone = false;
  absl::Status journal_error;
};

// Relays the worker's events to the client; the TurnDone is journaled before it is relayed.
Relayed Relay(RouterCore& core, const SessionRecord& rec, const WorkerSnapshot& owner,
              const v1::WorkerChatRequest& wreq, ReadStream<v1::ChatEvent>& reader,
              const Write& write) {
  Relayed out;
  std::vector<int32_t> streamed_tokens;
  std::string streamed_text;
  v1::ChatEvent ev;
  while (reader.Read(&ev)) {
    if (ev.has_delta()) {
      streamed_tokens.insert(streamed_tokens.end(), ev.delta().tokens().begin(),
                             ev.delta().tokens().end());
      streamed_text += ev.delta().text();
      out.relayed = true;
      if (!out.client_gone && !write(ev)) {
        out.client_gone = true;
        reader.Cancel();
      }
    } else if (ev.has_done() && !out.done_sent && out.journal_error.ok()) {
      v1::TurnDone* done = ev.mutable_done();
      if (done->worker().empty()) done->set_worker(owner.desc.id);
      out.journal_error = core.journal().CommitTurn(
          rec.id, RecordOf(wreq.turn(), *done, streamed_tokens, streamed_text, owner.desc.id));
      // What the turn appended to the session's log is what it added to the tenant's history.
      if (out.journal_error.ok()) core.quotas().AddHistory(rec.tenant, done->log_tokens_size());
      out.relayed = true;
      if (out.journal_error.ok() && !out.client_gone) out.done_sent = write(ev);
    }
  }
  return out;
}

Attempt Forward(RouterCore& core, const Caller& caller, const SessionRecord& rec,
                const WorkerSnapshot& owner, const v1::WorkerChatRequest& wreq,
                const Write& write) {
  // Deadline and cancellation propagate from the client's call to the worker's.
  std::unique_ptr<ReadStream<v1::ChatEvent>> reader =
      core.Worker(owner)->Chat(wreq, CallScope{caller.deadline, caller.cancelled});
  RouterCore::InflightTurn inflight;
  inflight.call = reader.get();
  core.TrackTurn(owner.desc.id, &inflight);
  const Relayed r = Relay(core, rec, owner, wreq, *reader, write);
  const absl::Status s = reader->Finish();
  core.UntrackTurn(owner.desc.id, &inflight);
  const std::string session = rec.id.ToHex();
  if (!r.journal_error.ok()) {
    return {absl::Status(r.journal_error.code(),
                         absl::StrCat("session ", session, ": worker '", owner.desc.id,
                                      "' committed the turn but the router's journal did not: ",
                                      r.journal_error.message()))};
  }
  if (r.done_sent) return {absl::OkStatus()};
  if (r.client_gone || caller.IsCancelled()) {
    return {absl::CancelledError(absl::StrCat("session ", session, ": the client cancelled the turn"))};
  }
  if (inflight.worker_died) {
    return {
        absl::UnavailableError(absl::StrCat(
            "session ", session, ": worker '", owner.desc.id, "' was declared dead during turn '",
            wreq.turn().turn_id(), "'; nothing of it was committed: retry the turn id")),
        !r.relayed};
  }
  if (absl::IsDataLoss(s) && !r.relayed && wreq.has_committed_turns() &&
      wreq.committed_turns() > 0) {
    // The owner holds fewer turns than the journal (its storage lost committed writes): the
    // session is rebuilt from the journal (the monitor's next scan), then the turn runs again.
    core.NoteBehind(owner.desc.id, {RouterCore::RefOf(rec)}, {wreq.committed_turns() - 1});
    return {absl::UnavailableError(absl::StrCat("session ", session, ": worker '", owner.desc.id,
                                                "' lost committed turns (", s.message(),
                                                "); the router rebuilds the session "
                                                "from its journal: retry the turn id")),
            true};
  }
  if (!s.ok()) {
    const bool unreachable = absl::IsUnavailable(s);
    absl::Status err = RouterCore::WorkerError(s, owner.desc.id, owner.desc.address);
    if (unreachable && r.relayed) {
      err = absl::UnavailableError(absl::StrCat(
          "session ", session, ": ", err.message(), " during turn '", wreq.turn().turn_id(),
          "'; nothing of it was committed: retry the turn id"));
    }
    return {err, unreachable && !r.relayed};
  }
  return {absl::InternalError(absl::StrCat("worker '", owner.desc.id,
                                           "' ended the turn on session ", session,
                                           " without a TurnDone"))};
}

// Sleeps `d` or until the caller goes away.
void Pause(const Caller& caller, absl::Duration d) {
  const absl::Time until = absl::Now() + d;
  while (absl::Now() < until && !caller.IsCancelled()) absl::SleepFor(absl::Milliseconds(10));
}

}  // namespace

absl::Status RouterCore::Chat(const Caller& caller, const v1::TurnRequest& req,
                              const std::function<bool(const v1::ChatEvent&)>& write) {
  absl::StatusOr<TenantQuotas::Turn> hold = quotas_.StartTurn(caller.tenant);
  if (!hold.ok()) {
    metrics_.TurnStarted();
    metrics_.TurnEnded(hold.status().code(), 0, 0, 0);
    return hold.status();
  }
  const absl::Time start = absl::Now();
  absl::Time last = start;
  bool first = true;
  int64_t prompt = 0, completion = 0;
  metrics_.TurnStarted();
  const absl::Status s = RunTurn(caller, req, [&](const v1::ChatEvent& ev) {
    const absl::Time now = absl::Now();
    if (ev.has_delta() && ev.delta().tokens_size() > 0) {
      if (first) {
        metrics_.FirstToken(absl::ToDoubleSeconds(now - start));
      } else {
        metrics_.InterToken(absl::ToDoubleSeconds(now - last), ev.delta().tokens_size());
      }
      first = false;
      last = now;
    }
    if (ev.has_done()) {
      prompt = ev.done().usage().prompt_tokens();
      completion = ev.done().usage().completion_tokens();
    }
    return write(ev);
  });
  metrics_.TurnEnded(s.code(), absl::ToDoubleSeconds(absl::Now() - start), prompt, completion);
  return s;
}

absl::Status RouterCore::RunTurn(const Caller& caller, const v1::TurnRequest& req,
                                 const std::function<bool(const v1::ChatEvent&)>& write) {
  RouterCore& core = *this;
  const std::string& tenant = caller.tenant;
  RSD_RETURN_IF_ERROR(CheckTurnRequest(caller, req));
  RSD_ASSIGN_OR_RETURN(SessionRecord rec, core.LoadSession(req.session_id(), &tenant));
  const absl::Time deadline = caller.deadline;
  const absl::Time owner_deadline = std::min(deadline, absl::Now() + core.options().owner_wait);
  // A turn without an id gets one, so that the router's own retries of it stay idempotent.
  const std::string turn_id =
      req.turn_id().empty() ? absl::StrCat("router:", SessionId::Random().ToHex()) : req.turn_id();
  const std::string what = absl::StrCat("turn '", turn_id, "'");
  for (;;) {
    RSD_ASSIGN_OR_RETURN(
        SessionGates::Lock gate,
        core.gates().Acquire(rec.id, what, deadline, [&caller] { return caller.IsCancelled(); }));
    // Under the gate: the owner the journal names now (a migration or failover may have run).
    RSD_ASSIGN_OR_RETURN(rec, core.LoadSession(req.session_id(), &tenant));
    if (!req.turn_id().empty()) {
      RSD_ASSIGN_OR_RETURN(std::optional<TurnRecord> committed,
                           core.journal().FindTurn(rec.id, req.turn_id()));
      if (committed.has_value()) return Replay(*committed, req, rec, write);
    }
    absl::StatusOr<WorkerSnapshot> owner = core.Owner(rec);
    Attempt attempt;
    if (!owner.ok()) {
      attempt = {owner.status(), true};
    } else {
      v1::WorkerChatRequest wreq;
      *wreq.mutable_ref() = RouterCore::RefOf(rec);
      *wreq.mutable_turn() = req;
      wreq.mutable_turn()->set_session_id(rec.id.ToHex());
      wreq.mutable_turn()->set_turn_id(turn_id);
      RSD_ASSIGN_OR_RETURN(const uint32_t committed, core.journal().TurnCount(rec.id));
      wreq.set_committed_turns(committed);
      RSD_ASSIGN_OR_RETURN(std::optional<PendingRecord> pending, core.journal().GetPending(rec.id));
      if (!req.sampling().has_seed()) {
        // The pending turn's seed if this turn id was forwarded before (its worker died), so a
        // sampled turn reproduces wherever it runs; else a fresh one.
        const bool same = pending.has_value() && pending->turn_id == turn_id;
        wreq.mutable_turn()->mutable_sampling()->set_seed(same ? pending->seed : RandomSeed());
      }
      PendingRecord next = PendingOf(wreq.turn());
      if (!pending.has_value() || pending->turn_id != next.turn_id ||
          pending->seed != next.seed) {
        RSD_RETURN_IF_ERROR(core.journal().PutPending(rec.id, next));
      }
      attempt = Forward(core, caller, rec, *owner, wreq, write);
    }
    if (!attempt.retry || absl::Now() >= owner_deadline || caller.IsCancelled()) {
      return attempt.status;
    }
    // The owner is dead, unregistered or unreachable and nothing was relayed: let failover (or
    // the worker's return) happen, then try again on whoever owns the session then.
    gate.Release();
    turn_retries_.fetch_add(1);
    Pause(caller, core.options().retry_interval);
  }
}

}  // namespace rsd::router
