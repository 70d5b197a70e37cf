#include "worker/engine/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "storage/common/clock.h"
#include "storage/common/log.h"
#include "storage/common/status.h"
#include "worker/engine/scheduler_internal.h"
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
    if (!st.ok()) {
      log::Error("rollback failed", {{"session", r.turn.id.ToHex()},
                                     {"turn", std::to_string(r.turn.turn)},
                                     {"error", st.ToString()}});
    }
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
  // A Status of its own (the message copied), not a second reference to `status`'s: the reader's
  // thread then shares no reference count with this one. The count is atomic, but Debian's Abseil
  // is not built with ThreadSanitizer, which would take the release of a shared one for a race.
  ev.status = absl::Status(status.code(), status.message());
  r.q.stream->Push(std::move(ev));
}

void Scheduler::Finish(std::span<Running* const> done) {
  if (done.empty()) return;
  std::vector<SessionManager::TurnToCommit> commits;
  for (Running* rp : done) {
    Running& r = *rp;
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
    g.text = d.answer();
    g.finish_reason = d.finish_reason();
    g.logit_hashes = d.logit_hashes();
    const double now = MonotonicSeconds();
    g.prefill_seconds = (r.first_token > 0 ? r.first_token : now) - r.admitted;
    g.decode_seconds = r.first_token > 0 ? now - r.first_token : 0;
    commits.push_back({&r.turn, std::move(g)});
  }
  // One synced write for every turn that ended in this step (a group commit).
  std::vector<absl::StatusOr<TurnResult>> committed = sessions_->CommitTurns(commits);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.commit_groups++;
  }
  for (size_t i = 0; i < done.size(); ++i) {
    Running& r = *done[i];
    if (!committed[i].ok()) {
      Fail(r, committed[i].status());
      continue;
    }
    TurnEvent ev;
    ev.kind = TurnEvent::Kind::kDone;
    ev.result = *std::move(committed[i]);
    ev.result.seed = r.q.spec.params.sampling.seed;
    ev.queue_seconds = r.admitted - r.q.submitted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.committed++;
    }
    r.q.stream->Push(std::move(ev));
  }
}

std::vector<std::string> Scheduler::PrefixSummary() const {
  std::lock_guard<std::mutex> lock(mu_);
  return prefix_summary_;
}

void Scheduler::SyncRunning() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.running = static_cast<int32_t>(running_.size());
}

bool Scheduler::Iterate() {
  RunTasks();
  bool progressed = Admit();
  progressed = StepOnce() || progressed;
  const double now = MonotonicSeconds();
  if (now - last_housekeeping_ > options_.housekeeping_seconds) {
    last_housekeeping_ = now;
    sessions_->ExpireIdle(Busy());
    std::vector<std::string> summary = sessions_->PrefixSummary(options_.prefix_summary_keys);
    std::lock_guard<std::mutex> lock(mu_);
    prefix_summary_ = std::move(summary);
  }
  const int32_t used = engine_->pool().used();
  const int32_t shared = engine_->pool().shared();
  const int64_t saved = engine_->pool().saved();
  const int32_t n_sessions = static_cast<int32_t>(sessions_->session_count());
  const size_t device_used = engine_->backend().device_info().memory_used;
  std::lock_guard<std::mutex> lock(mu_);
  stats_.running = static_cast<int32_t>(running_.size());
  stats_.hot_blocks_used = used;
  stats_.hot_blocks_shared = shared;
  stats_.hot_blocks_saved = saved;
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
