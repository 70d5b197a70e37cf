#include "worker/engine/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "storage/common/clock.h"
#include "storage/common/status.h"
#include "worker/engine/turn_decoder.h"

namespace rsd {

// ---------------------------------------------------------------------------------------------
// TurnStream

bool TurnStream::Next(TurnEvent* event, double timeout_seconds) {
  std::function<void()> wake;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::duration<double>(timeout_seconds),
                      [&] { return !events_.empty(); })) {
      return false;
    }
    const bool was_full = events_.size() >= capacity_;
    *event = std::move(events_.front());
    events_.pop_front();
    if (was_full) wake = on_read_;
  }
  if (wake) wake();
  return true;
}

void TurnStream::Cancel() {
  std::function<void()> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!cancelled_.load() && step_clock_) cancelled_at_step_.store(step_clock_());
    cancelled_.store(true);
    wake = on_read_;
  }
  if (wake) wake();
}

void TurnStream::Push(TurnEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(event));
  }
  cv_.notify_all();
}

bool TurnStream::full() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_.size() >= capacity_;
}

// ---------------------------------------------------------------------------------------------
// Scheduler

struct Scheduler::Running {
  Queued q;
  PendingTurn turn;
  bool begun = false;  // BeginTurn succeeded: a failure rolls the session back
  std::unique_ptr<TurnDecoder> decoder;
  int64_t reserve_blocks = 0;
  double admitted = 0, first_token = 0;
  int64_t text_offset = 0;
};

Scheduler::Scheduler(Engine* engine, SessionManager* sessions, SchedulerOptions options)
    : engine_(engine), sessions_(sessions), options_(options) {
  last_progress_ = MonotonicSeconds();
  if (options_.own_thread) thread_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  } else {
    Shutdown();
  }
}

absl::StatusOr<std::shared_ptr<TurnStream>> Scheduler::Submit(TurnSpec spec) {
  if (spec.draw_seed) {
    spec.params.sampling.seed = RandomSeed();
    spec.draw_seed = false;
  }
  auto stream = std::make_shared<TurnStream>(static_cast<size_t>(options_.stream_buffer));
  stream->on_read_ = [this] { cv_.notify_all(); };
  stream->step_clock_ = [this] { return step_count_.load(); };
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return absl::UnavailableError("the worker is shutting down");
    if (static_cast<int>(queue_.size()) >= options_.max_queue) {
      stats_.refused++;
      return absl::ResourceExhaustedError(absl::StrCat(
          "the worker's queue is full (", queue_.size(), " turns waiting, limit ",
          options_.max_queue, "); retry after about a second"));
    }
    queue_.push_back(Queued{std::move(spec), stream, MonotonicSeconds(), order_++});
    stats_.queue_depth = static_cast<int32_t>(queue_.size());
    // The stall clock starts when work arrives.
    if (!has_work_) last_progress_ = MonotonicSeconds();
    has_work_ = true;
  }
  cv_.notify_all();
  return stream;
}

void Scheduler::RunSync(const std::function<void()>& fn) {
  if (!options_.own_thread) {
    fn();  // the caller is the compute thread
    return;
  }
  std::mutex done_mu;
  std::condition_variable done_cv;
  bool done = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back([&] {
      fn();
      std::lock_guard<std::mutex> l(done_mu);
      done = true;
      done_cv.notify_all();
    });
  }
  cv_.notify_all();
  std::unique_lock<std::mutex> l(done_mu);
  done_cv.wait(l, [&] { return done; });
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

bool Scheduler::Healthy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !(has_work_ && MonotonicSeconds() - last_progress_ > options_.stall_seconds);
}

bool Scheduler::HasTurn(const SessionId& id) const {
  for (const auto& r : running_) {
    if (r->turn.id == id) return true;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const Queued& q : queue_) {
    if (q.spec.id == id) return true;
  }
  return false;
}

std::vector<SessionId> Scheduler::Busy() const {
  std::vector<SessionId> ids;
  for (const auto& r : running_) ids.push_back(r->turn.id);
  return ids;
}

void Scheduler::RunTasks() {
  std::deque<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks.swap(tasks_);
  }
  for (auto& t : tasks) t();
}

void Scheduler::Fail(Running& r, const absl::Status& status) {
  if (r.begun) {
    absl::Status st = sessions_->AbortTurn(r.turn);
    if (!st.ok()) std::fprintf(stderr, "rollback failed: %s\n", st.ToString().c_str());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);  // counters first: a reader of the event sees them
    if (status.code() == absl::StatusCode::kCancelled) {
      stats_.cancelled++;
    } else {
      stats_.failed++;
    }
  }
  TurnEvent ev;
  ev.kind = TurnEvent::Kind::kError;
  ev.status = status;
  r.q.stream->Push(std::move(ev));
}

void Scheduler::Finish(Running& r) {
  const TurnDecoder& d = *r.decoder;
  // The last characters of the text (a held-back partial one becomes U+FFFD).
  std::string tail = r.decoder->TakeText();
  if (!tail.empty()) {
    TurnEvent ev;
    ev.offset = static_cast<int64_t>(d.tokens().size());
    ev.text_offset = r.text_offset;
    ev.text = std::move(tail);
    r.text_offset += static_cast<int64_t>(ev.text.size());
    r.q.stream->Push(std::move(ev));
  }
  GenerateResult g;
  g.tokens = d.tokens();
  g.text = engine_->tokenizer().Decode(g.tokens, false);
  g.finish_reason = d.finish_reason();
  g.logit_hashes = d.logit_hashes();
  const double now = MonotonicSeconds();
  g.prefill_seconds = (r.first_token > 0 ? r.first_token : now) - r.admitted;
  g.decode_seconds = r.first_token > 0 ? now - r.first_token : 0;
  absl::StatusOr<TurnResult> committed = sessions_->CommitTurn(r.turn, std::move(g));
  if (!committed.ok()) {
    Fail(r, committed.status());
    return;
  }
  TurnEvent ev;
  ev.kind = TurnEvent::Kind::kDone;
  ev.result = *std::move(committed);
  ev.result.seed = r.q.spec.params.sampling.seed;
  ev.queue_seconds = r.admitted - r.q.submitted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.committed++;
  }
  r.q.stream->Push(std::move(ev));
}

bool Scheduler::Admit() {
  bool admitted_any = false;
  for (;;) {
    if (static_cast<int>(running_.size()) >= options_.max_running) return admitted_any;
    // The most important waiting turn whose session has no turn running.
    Queued q;
    {
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
      std::vector<SessionId> busy = Busy();
      auto best = queue_.end();
      for (auto it = queue_.begin(); it != queue_.end(); ++it) {
        if (std::find(busy.begin(), busy.end(), it->spec.id) != busy.end()) continue;
        // FIFO per session: an earlier turn of the same session goes first.
        bool earlier = false;
        for (auto jt = queue_.begin(); jt != it; ++jt) earlier = earlier || jt->spec.id == it->spec.id;
        if (earlier) continue;
        // Higher session priority first, then arrival order.
        if (best == queue_.end() || sessions_->Priority(it->spec.id) > sessions_->Priority(best->spec.id)) {
          best = it;
        }
      }
      if (best == queue_.end()) {
        stats_.queue_depth = static_cast<int32_t>(queue_.size());
        return admitted_any;
      }
      q = *best;
      queue_.erase(best);
      stats_.queue_depth = static_cast<int32_t>(queue_.size());
    }
    auto r = std::make_unique<Running>();
    r->q = std::move(q);
    const TurnSpec& spec = r->q.spec;
    // Ownership, tenancy and limits.
    absl::StatusOr<SessionInfo> info = sessions_->Describe(spec.id);
    absl::Status check = info.status();
    if (check.ok() && info->attrs.tenant == spec.tenant) {
      check = sessions_->CheckTurn(spec.id, spec.user_text, spec.params);
    }
    if (check.ok() && info->attrs.tenant != spec.tenant) {
      check = absl::NotFoundError(absl::StrCat("unknown session ", spec.id.ToHex()));
    } else if (check.ok() && spec.epoch != 0 && info->attrs.epoch != spec.epoch) {
      check = absl::FailedPreconditionError(absl::StrCat(
          "session ", spec.id.ToHex(), " is at epoch ", info->attrs.epoch, " here, not ",
          spec.epoch, " (stale owner)"));
    }
    if (!check.ok()) {
      Fail(*r, check);
      continue;
    }
    // Room in the hot pool: what running turns may still grow into, what idle resident
    // sessions hold (they can be spilled), and what this turn needs at most.
    const int64_t max_new = sessions_->UserTurnTokens(spec.id, spec.user_text) +
                            std::max(spec.params.max_tokens, 0);
    const int64_t need_total = sessions_->BlocksForTurn(spec.id, max_new);
    const int64_t capacity = engine_->pool().capacity();
    auto free_blocks = [&] {
      int64_t reserved = 0, running_held = 0;
      for (const auto& x : running_) {
        reserved += x->reserve_blocks;
        running_held += sessions_->HotBlocks(x->turn.id);
      }
      const int64_t idle_held = engine_->pool().used() - running_held -
                                sessions_->HotBlocks(spec.id);
      return capacity - reserved - idle_held - (need_total);
    };
    if (need_total > capacity) {
      Fail(*r, absl::ResourceExhaustedError(absl::StrCat(
                   "this turn may need ", need_total, " K/V blocks but the worker's hot pool holds ",
                   capacity, "; start the worker with a larger --hot-bytes or a per-session "
                   "--hot-budget-tokens so it runs bounded")));
      continue;
    }
    bool room = free_blocks() >= 0;
    std::vector<SessionId> busy = Busy();
    busy.push_back(spec.id);
    while (!room) {
      absl::StatusOr<bool> spilled = sessions_->SpillIdle(busy);
      if (!spilled.ok() || !*spilled) break;
      {
        std::lock_guard<std::mutex> lock(mu_);
        stats_.spills++;
      }
      room = free_blocks() >= 0;
    }
    if (!room) {
      // Wait for running turns to finish; keep this turn first in line.
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_front(std::move(r->q));
      stats_.queue_depth = static_cast<int32_t>(queue_.size());
      return admitted_any;
    }
    absl::StatusOr<PendingTurn> turn =
        sessions_->BeginTurn(spec.id, spec.user_text, spec.params, /*flush=*/false);
    if (!turn.ok()) {
      Fail(*r, turn.status());
      continue;
    }
    r->turn = *std::move(turn);
    r->begun = true;
    r->reserve_blocks = need_total;
    r->admitted = MonotonicSeconds();
    if (r->turn.restored_from != "hot" && r->turn.restored_from != "new") {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.restores++;
    }
    engine_->AppendPending(r->turn.id, r->turn.user_tokens);
    r->decoder = std::make_unique<TurnDecoder>(engine_->tokenizer(),
                                               engine_->chat_template().StopTokens(), spec.params);
    admitted_any = true;
    if (r->decoder->done()) {  // max_tokens 0: the message is appended, nothing generated
      Finish(*r);
      continue;
    }
    running_.push_back(std::move(r));
    SyncRunning();
  }
}

void Scheduler::SyncRunning() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.running = static_cast<int32_t>(running_.size());
}

bool Scheduler::StepOnce() {
  // Cancelled turns leave the batch now and roll back.
  for (auto it = running_.begin(); it != running_.end();) {
    if ((*it)->q.stream->cancelled()) {
      std::unique_ptr<Running> r = std::move(*it);
      it = running_.erase(it);
      SyncRunning();
      const int64_t at = r->q.stream->cancelled_at_step_.load();
      if (at >= 0) {
        std::lock_guard<std::mutex> lock(mu_);
        stats_.max_cancel_steps = std::max(stats_.max_cancel_steps, step_count_.load() - at);
      }
      Fail(*r, absl::CancelledError("the client cancelled the turn; it was rolled back"));
    } else {
      ++it;
    }
  }
  if (running_.empty()) return false;
  std::vector<Engine::Work> work;
  std::vector<Running*> owners;
  int64_t budget = options_.step_tokens;
  int32_t decode_rows = 0;
  int64_t prefill = 0;
  int64_t paused = 0;
  // Decode rows first (one pending token: the last sampled one), then prompt chunks.
  for (int pass = 0; pass < 2; ++pass) {
    for (auto& r : running_) {
      const bool decoding = !r->decoder->tokens().empty();
      if (decoding != (pass == 0)) continue;
      if (r->q.stream->full()) {
        paused++;
        continue;
      }
      const int64_t limit =
          std::min<int64_t>({engine_->MaxPendingFeed(r->turn.id), options_.prefill_chunk, budget});
      if (limit <= 0) continue;
      work.push_back(Engine::Work{r->turn.id, {}, false, limit});
      owners.push_back(r.get());
      budget -= limit;
      if (decoding) {
        decode_rows++;
      } else {
        prefill += limit;
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.paused_steps += paused;
  }
  if (work.empty()) return false;
  ForwardResult fr;
  const absl::Status st = engine_->Step(work, false, &fr);
  if (st.code() == absl::StatusCode::kResourceExhausted && work.size() > 1) {
    // The batch as a whole did not fit the device (a workspace grows with the rows): its turns
    // run one at a time instead, so only a turn that cannot fit even alone fails. Batching never
    // changes a turn's bits, so this is exact.
    for (size_t i = 0; i < work.size(); ++i) {
      const bool decoding = !owners[i]->decoder->tokens().empty();
      ForwardResult one;
      const absl::Status st1 =
          engine_->Step(std::span<const Engine::Work>(&work[i], 1), false, &one);
      Advance({owners[i]}, st1, one, decoding ? 0 : work[i].pending_limit, decoding ? 1 : 0);
    }
    return true;
  }
  Advance(owners, st, fr, prefill, decode_rows);
  return true;
}

void Scheduler::Advance(const std::vector<Running*>& owners, const absl::Status& st,
                        const ForwardResult& fr, int64_t prefill, int32_t decode_rows) {
  if (!st.ok()) {
    // A checkpoint that failed to load (DATA_LOSS): it is not known which turn's it was, so every
    // session of the batch drops its checkpoints and its turn runs again, once, from the token
    // log. Anything else (out of device memory for a turn alone, a device fault) fails the
    // batch's turns; each rolls back.
    for (Running* r : owners) {
      auto it = std::find_if(running_.begin(), running_.end(),
                             [&](const auto& x) { return x.get() == r; });
      std::unique_ptr<Running> own = std::move(*it);
      running_.erase(it);
      SyncRunning();
      if (st.code() == absl::StatusCode::kDataLoss && own->q.attempts == 0) {
        absl::Status rb = sessions_->AbortTurn(own->turn);
        if (rb.ok()) rb = sessions_->ResetToTokens(own->turn.id, st);
        if (rb.ok()) {
          own->q.attempts++;
          own->q.skip_tokens = std::max<int64_t>(
              own->q.skip_tokens, static_cast<int64_t>(own->decoder->tokens().size()));
          std::lock_guard<std::mutex> lock(mu_);
          queue_.push_front(std::move(own->q));
          stats_.queue_depth = static_cast<int32_t>(queue_.size());
          continue;
        }
      }
      Fail(*own, absl::Status(st.code(), absl::StrCat("engine step failed: ", st.message())));
    }
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.steps++;
    stats_.prefill_tokens += prefill;
    if (decode_rows > 0) {
      stats_.decode_steps++;
      stats_.decode_rows += decode_rows;
      stats_.max_decode_rows = std::max(stats_.max_decode_rows, decode_rows);
    }
    last_progress_ = MonotonicSeconds();
  }
  const int64_t vocab = engine_->config().vocab_size;
  std::vector<Running*> finished;
  for (size_t row = 0; row < fr.logit_seq.size(); ++row) {
    Running* r = owners[static_cast<size_t>(fr.logit_seq[row])];
    if (engine_->PendingTokens(r->turn.id) > 0) continue;  // more of the prompt to feed
    std::span<const float> logits(fr.logits.data() + row * vocab, static_cast<size_t>(vocab));
    const int64_t position = static_cast<int64_t>(engine_->SequenceTokens(r->turn.id).size());
    const bool done = r->decoder->Next(logits, position);
    const int32_t tok = r->decoder->tokens().back();
    engine_->AppendPending(r->turn.id, std::span<const int32_t>(&tok, 1));
    if (r->first_token == 0) r->first_token = MonotonicSeconds();
    TurnEvent ev;
    ev.offset = static_cast<int64_t>(r->decoder->tokens().size()) - 1;
    ev.tokens = {tok};
    ev.text_offset = r->text_offset;
    ev.text = done ? std::string() : r->decoder->TakeText();
    r->text_offset += static_cast<int64_t>(ev.text.size());
    if (ev.offset >= r->q.skip_tokens) r->q.stream->Push(std::move(ev));
    if (done) finished.push_back(r);
  }
  for (Running* r : finished) {
    auto it = std::find_if(running_.begin(), running_.end(),
                           [&](const auto& x) { return x.get() == r; });
    std::unique_ptr<Running> done = std::move(*it);
    running_.erase(it);
    SyncRunning();
    Finish(*done);
  }
}

bool Scheduler::Iterate() {
  RunTasks();
  bool progressed = Admit();
  progressed = StepOnce() || progressed;
  const double now = MonotonicSeconds();
  if (now - last_housekeeping_ > options_.housekeeping_seconds) {
    last_housekeeping_ = now;
    sessions_->ExpireIdle(Busy());
  }
  const int32_t used = engine_->pool().used();
  const int32_t n_sessions = static_cast<int32_t>(sessions_->session_count());
  const size_t device_used = engine_->backend().device_info().memory_used;
  std::lock_guard<std::mutex> lock(mu_);
  stats_.running = static_cast<int32_t>(running_.size());
  stats_.hot_blocks_used = used;
  stats_.device_memory_used = static_cast<int64_t>(device_used);
  stats_.sessions = n_sessions;
  has_work_ = !running_.empty() || !queue_.empty();
  if (!has_work_) last_progress_ = now;
  return progressed;
}

void Scheduler::Loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (stop_) break;
    }
    const bool progressed = Iterate();
    std::unique_lock<std::mutex> lock(mu_);
    if (stop_) break;
    if (!progressed && tasks_.empty()) {
      // Idle, or every running turn is paused on its client: sleep until something changes.
      cv_.wait_for(lock, std::chrono::milliseconds(running_.empty() ? 200 : 5));
    }
  }
  Shutdown();
}

void Scheduler::Shutdown() {
  // Nothing half-done stays in the log.
  RunTasks();
  for (auto& r : running_) Fail(*r, absl::CancelledError("the worker is shutting down"));
  running_.clear();
  std::lock_guard<std::mutex> lock(mu_);
  for (Queued& q : queue_) {
    TurnEvent ev;
    ev.kind = TurnEvent::Kind::kError;
    ev.status = absl::CancelledError("the worker is shutting down");
    q.stream->Push(std::move(ev));
  }
  queue_.clear();
}

bool Scheduler::Pump() {
  RSD_CHECK(!options_.own_thread);
  return Iterate();
}

absl::StatusOr<TurnResult> Scheduler::RunTurn(
    TurnSpec spec, const std::function<void(const TurnEvent&)>& on_delta) {
  RSD_ASSIGN_OR_RETURN(std::shared_ptr<TurnStream> stream, Submit(std::move(spec)));
  for (;;) {
    TurnEvent ev;
    if (options_.own_thread) {
      if (!stream->Next(&ev, 1.0)) continue;
    } else if (!stream->Next(&ev, 0)) {
      const bool progressed = Iterate();
      if (!stream->Next(&ev, 0)) {
        if (progressed) continue;
        // Nothing ran and nothing can: the turn waits for room no running turn will free.
        stream->Cancel();
        Iterate();  // drops it from the queue
        return absl::ResourceExhaustedError(
            "the turn cannot be admitted: the hot pool has no room and nothing can be spilled");
      }
    }
    switch (ev.kind) {
      case TurnEvent::Kind::kDelta:
        if (on_delta) on_delta(ev);
        continue;
      case TurnEvent::Kind::kDone:
        return std::move(ev.result);
      case TurnEvent::Kind::kError:
        return ev.status;
    }
  }
}

}  // namespace rsd
