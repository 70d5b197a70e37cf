// Admission: which queued turn goes next, whether its session may run it here, room in the hot
// pool (spilling idle sessions to make it), and the start of the turn. Split from scheduler.cc.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/common/clock.h"
#include "storage/common/log.h"
#include "storage/common/status.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/scheduler_internal.h"

namespace rsd {

bool Scheduler::Admit() {
  bool admitted_any = false;
  for (;;) {
    if (static_cast<int>(running_.size()) >= options_.max_running) return admitted_any;
    std::optional<Queued> q = TakeNext();
    if (!q.has_value()) return admitted_any;
    auto r = std::make_unique<Running>();
    r->q = *std::move(q);
    const TurnSpec& spec = r->q.spec;
    if (absl::Status check = CheckTurnHere(spec); !check.ok()) {
      Fail(*r, check);
      continue;
    }
    absl::StatusOr<bool> room = MakeRoom(*r);
    if (!room.ok()) {
      Fail(*r, room.status());
      continue;
    }
    if (!*room) {
      // Wait for running turns to finish; keep this turn first in line.
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_front(std::move(r->q));
      stats_.queue_depth = static_cast<int32_t>(queue_.size());
      return admitted_any;
    }
    if (absl::Status begun = Begin(*r); !begun.ok()) {
      Fail(*r, begun);
      continue;
    }
    admitted_any = true;
    if (r->decoder->done()) {  // max_tokens 0: the message is appended, nothing generated
      Running* one = r.get();
      Finish(std::span<Running* const>(&one, 1));
      continue;
    }
    running_.push_back(std::move(r));
    SyncRunning();
  }
}

std::optional<Scheduler::Queued> Scheduler::TakeNext() {
  std::lock_guard<std::mutex> lock(mu_);
  // Drop cancelled ones first.
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (it->stream->cancelled()) {
      TurnEvent ev;
      ev.kind = TurnEvent::Kind::kError;
      ev.status = absl::CancelledError("the turn was cancelled before it started");
      it->stream->Push(std::move(ev));
      stats_.cancelled++;
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  // The most important waiting turn whose session has no turn running.
  std::vector<SessionId> busy = Busy();
  auto best = queue_.end();
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (std::find(busy.begin(), busy.end(), it->spec.id) != busy.end()) continue;
    // FIFO per session: an earlier turn of the same session goes first.
    bool earlier = false;
    for (auto jt = queue_.begin(); jt != it; ++jt) earlier = earlier || jt->spec.id == it->spec.id;
    if (earlier) continue;
    // Higher session priority first, then arrival order.
    if (best == queue_.end() ||
        sessions_->Priority(it->spec.id) > sessions_->Priority(best->spec.id)) {
      best = it;
    }
  }
  std::optional<Queued> out;
  if (best != queue_.end()) {
    out = *best;
    queue_.erase(best);
  }
  stats_.queue_depth = static_cast<int32_t>(queue_.size());
  return out;
}

absl::Status Scheduler::CheckTurnHere(const TurnSpec& spec) {
  // Ownership, tenancy, the journal's turns and limits.
  RSD_ASSIGN_OR_RETURN(SessionInfo info, sessions_->Describe(spec.id));
  if (info.attrs.tenant != spec.tenant) {
    return absl::NotFoundError(absl::StrCat("unknown session ", spec.id.ToHex()));
  }
  if (spec.epoch != 0 && info.attrs.epoch != spec.epoch) {
    return absl::FailedPreconditionError(absl::StrCat("session ", spec.id.ToHex(), " is at epoch ",
                                                      info.attrs.epoch, " here, not ", spec.epoch,
                                                      " (stale owner)"));
  }
  if (spec.committed_turns.has_value()) {
    RSD_RETURN_IF_ERROR(SettleTurns(spec.id, info.turns, *spec.committed_turns));
  }
  return sessions_->CheckTurn(spec.id, spec.input, spec.params);
}

absl::Status Scheduler::SettleTurns(const SessionId& id, uint32_t here, uint32_t journal) {
  if (here < journal) {
    // Storage lost committed writes: DATA_LOSS, on which the router rebuilds the session from its
    // journal and runs the turn again.
    return absl::DataLossError(absl::StrCat("session ", id.ToHex(), " holds ", here,
                                            " committed turns here but the router's journal ",
                                            journal, ": its state here is behind the journal"));
  }
  for (uint32_t turn = here; turn > journal; --turn) {
    // Durable here, but the worker died before its reply reached the router, which now retries
    // the turn with the same seed: the retry replaces it rather than following it.
    log::Warn("dropping a turn the router never committed",
              {{"session", id.ToHex()},
               {"turn", absl::StrCat(turn)},
               {"journal_turns", absl::StrCat(journal)}});
    RSD_RETURN_IF_ERROR(sessions_->Undo(id));
    std::lock_guard<std::mutex> lock(mu_);
    stats_.dropped_turns++;
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> Scheduler::MakeRoom(Running& r) {
  const TurnSpec& spec = r.q.spec;
  // Room in the hot pool: what running turns may still grow into, what idle resident sessions
  // hold (they can be spilled), and what this turn needs at most.
  const int64_t max_new =
      sessions_->UserTurnTokens(spec.id, spec.input) + std::max(spec.params.max_tokens, 0);
  // A write into a block another session shares copies it first: one block more.
  const bool copies = engine_->HasSequence(spec.id) && engine_->WritesIntoSharedBlock(spec.id);
  const int64_t need_total = sessions_->BlocksForTurn(spec.id, max_new) + (copies ? 1 : 0);
  const int64_t capacity = engine_->pool().capacity();
  if (need_total > capacity) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this turn may need ", need_total, " K/V blocks but the worker's hot pool holds ", capacity,
        "; start the worker with a larger --hot-bytes or a per-session "
        "--hot-budget-tokens so it runs bounded"));
  }
  // A turn that starts from another session's hot blocks (a first turn's prompt, a spilled
  // session's restore) shares them: they need no room (unbounded sessions; a bounded one may
  // trade them for blocks of its own as it grows).
  const SessionManager::PrefixDonor donor = sessions_->PrefixDonorFor(spec.id, spec.input);
  const int64_t shared = engine_->hot_budget_blocks() == 0 && donor.hot ? donor.chunks : 0;
  auto free_blocks = [&] {
    int64_t reserved = 0, running_held = 0;
    for (const auto& x : running_) {
      reserved += x->reserve_blocks;
      running_held += sessions_->HotBlocks(x->turn.id);
    }
    const int64_t idle_held = engine_->pool().used() - running_held - sessions_->HotBlocks(spec.id);
    return capacity - reserved - idle_held - (need_total - shared);
  };
  bool room = free_blocks() >= 0;
  std::vector<SessionId> busy = Busy();
  busy.push_back(spec.id);
  if (shared > 0) busy.push_back(donor.id);  // spilling it would lose the blocks counted on
  while (!room) {
    absl::StatusOr<bool> spilled = sessions_->SpillIdle(busy);
    if (!spilled.ok() || !*spilled) break;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.spills++;
    }
    room = free_blocks() >= 0;
  }
  r.reserve_blocks = need_total;
  return room;
}

absl::Status Scheduler::Begin(Running& r) {
  const TurnSpec& spec = r.q.spec;
  RSD_ASSIGN_OR_RETURN(r.turn,
                       sessions_->BeginTurn(spec.id, spec.input, spec.params, /*flush=*/false));
  r.begun = true;
  r.admitted = MonotonicSeconds();
  if (r.turn.restored_from != "hot" && r.turn.restored_from != "new") {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.restores++;
  }
  engine_->AppendPending(r.turn.id, std::span<const int32_t>(r.turn.user_tokens)
                                        .subspan(static_cast<size_t>(r.turn.reused_tokens)));
  r.decoder = std::make_unique<TurnDecoder>(engine_->tokenizer(),
                                            engine_->chat_template().StopTokens(), spec.params);
  return absl::OkStatus();
}

}  // namespace rsd
