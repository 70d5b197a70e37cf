// The continuous-batching scheduler (DESIGN.md sections 3, 5): one compute thread owns the engine
// and the session manager; turns of many sessions run together, each engine step carrying the
// decode rows of every running turn plus chunks of the prompts being prefilled. Turns are
// admitted by hot-pool room (idle sessions spill to make it), a full queue refuses at once, a
// cancelled turn leaves the batch at the next step and rolls back, and a turn whose client reads
// slowly pauses (its stream buffer is bounded) instead of stalling the others.
//
// Batching never changes a session's output: every kernel computes each row alone (section 2),
// so a turn's tokens equal the same turn run alone (tests/serving).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/session_manager.h"

namespace rsd {

struct SchedulerOptions {
  int max_queue = 256;          // turns waiting for admission; beyond it Submit refuses
  int max_running = 64;         // turns in the batch at once
  int prefill_chunk = 256;      // most prompt tokens of one turn per step
  int step_tokens = 512;        // most tokens of all turns per step (decode rows come first)
  int stream_buffer = 64;       // events a turn may have unread before its session pauses
  double stall_seconds = 30;    // Healthy() is false when work waits this long without a step
  // How often idle sessions are checked against their TTL (spilled past it, deleted past twice
  // it). A session is seen in its spilled window [TTL, 2 TTL) when this is well under the TTL.
  double housekeeping_seconds = 1.0;
  size_t prefix_summary_keys = 1024;  // most keys PrefixSummary publishes
  // Whether the scheduler runs its own compute thread (a worker). Without one, the caller's thread
  // is the compute thread and drives it through RunTurn or Pump (rsd-run, tests): the engine and
  // session manager may then be used directly between those calls.
  bool own_thread = true;
};

// One event of a running turn, in order: deltas, then exactly one of done or error.
struct TurnEvent {
  enum class Kind { kDelta, kDone, kError };
  Kind kind = Kind::kDelta;
  // kDelta: tokens[offset..] of the turn's generated tokens and their text (complete characters).
  int64_t offset = 0;
  std::vector<int32_t> tokens;
  int64_t text_offset = 0;
  std::string text;
  // kDone: the committed turn.
  TurnResult result;
  double queue_seconds = 0;
  // kError
  absl::Status status;
};

// The channel between the scheduler thread and the caller (an RPC handler) of one turn.
class TurnStream {
 public:
  explicit TurnStream(size_t capacity) : capacity_(capacity) {}
  // Waits up to `timeout_seconds` for the next event; false on timeout.
  bool Next(TurnEvent* event, double timeout_seconds);
  // The caller has gone (client cancelled, deadline passed): the turn leaves the batch at the
  // next step and rolls back.
  void Cancel();
  bool cancelled() const { return cancelled_.load(); }

 private:
  friend class Scheduler;
  void Push(TurnEvent event);
  bool full() const;
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<TurnEvent> events_;
  std::atomic<bool> cancelled_{false};
  std::atomic<int64_t> cancelled_at_step_{-1};  // the scheduler's step count at Cancel()
  std::function<void()> on_read_;  // wakes the scheduler (a paused turn may resume)
  std::function<int64_t()> step_clock_;
};

struct TurnSpec {
  SessionId id;
  std::string tenant = "default";
  uint64_t epoch = 0;
  TurnInput input;
  GenerateParams params;
  // The request named no seed: Submit draws one into params.sampling.seed (the one place a worker
  // draws seeds; TurnResult::seed reports it).
  bool draw_seed = false;
  // The turns the router's journal holds committed (WorkerChatRequest.committed_turns): turns
  // past them here are dropped before this one runs (their commit never reached the router);
  // fewer here is DATA_LOSS (the router rebuilds the session from its journal). Unset: no check.
  std::optional<uint32_t> committed_turns;
};

struct SchedulerStats {
  int64_t steps = 0, decode_rows = 0, decode_steps = 0, prefill_tokens = 0;
  int64_t committed = 0, cancelled = 0, failed = 0, refused = 0;
  // Group commits: one per step in which turns ended, each one synced write of all their turns
  // (where the worker has a store), so committed / commit_groups is the turns an fsync carried.
  int64_t commit_groups = 0;
  // Turns durable here that the router's journal never committed, dropped before a retry.
  int64_t dropped_turns = 0;
  int64_t spills = 0, restores = 0, paused_steps = 0;
  int32_t max_decode_rows = 0;
  // The most engine steps a cancelled turn ran after its Cancel() (0 or 1 by construction:
  // cancellation is checked before every step).
  int64_t max_cancel_steps = 0;
  int32_t queue_depth = 0, running = 0;
  // Published by the compute thread after every step (heartbeats read these, not the engine).
  int32_t hot_blocks_used = 0, sessions = 0;
  int32_t hot_blocks_shared = 0;   // blocks more than one session holds
  int64_t hot_blocks_saved = 0;    // blocks sharing saves
  int64_t device_memory_used = 0;  // bytes the backend holds (weights, pool, workspace)
};

class Scheduler {
 public:
  Scheduler(Engine* engine, SessionManager* sessions, SchedulerOptions options);
  ~Scheduler();  // stops the compute thread; turns still queued or running get CANCELLED

  // Queues a turn. RESOURCE_EXHAUSTED at once (with a retry hint) when the queue is full.
  // Everything else (unknown session, limits, ...) arrives as the stream's error event.
  absl::StatusOr<std::shared_ptr<TurnStream>> Submit(TurnSpec spec);
  // Submits a turn and waits for its end, handing each delta to `on_delta`: the committed turn or
  // its error (the stream's, or Submit's). Without an own thread the caller's thread computes
  // meanwhile; RESOURCE_EXHAUSTED if the turn can never be admitted.
  absl::StatusOr<TurnResult> RunTurn(TurnSpec spec,
                                     const std::function<void(const TurnEvent&)>& on_delta = {});
  // Without an own thread: one round of the loop (queued tasks, admission, one engine step,
  // housekeeping). Returns whether anything progressed.
  bool Pump();
  // Runs `fn` on the compute thread between steps (the session manager and engine are not
  // thread-safe) and waits for it.
  void RunSync(const std::function<void()>& fn);
  SchedulerStats stats() const;
  // The session manager's PrefixSummary as the compute thread last published it (every
  // housekeeping_seconds): what the worker's status reports for cache-aware routing.
  std::vector<std::string> PrefixSummary() const;
  // Whether `id` has a turn queued or running. Compute thread only (inside RunSync).
  bool HasTurn(const SessionId& id) const;
  // False when work has waited stall_seconds without the scheduler making progress.
  bool Healthy() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Queued {
    TurnSpec spec;
    std::shared_ptr<TurnStream> stream;
    double submitted = 0;
    uint64_t order = 0;
    // A turn run again after a checkpoint failed to load: the tokens already streamed are not
    // sent twice (the rerun is deterministic, so it produces them again first).
    int64_t skip_tokens = 0;
    int attempts = 0;
  };
  struct Running;
  void Loop();
  bool Iterate();   // one round of the loop; whether anything progressed
  void Shutdown();  // fails what is running or queued
  // Admission (scheduler_admit.cc). Admits queued turns while the batch and the pool have room;
  // returns whether any was.
  bool Admit();
  // Drops cancelled queued turns and takes the most important one whose session is idle.
  std::optional<Queued> TakeNext();
  // Whether the session here may run the turn: known, the caller's tenant, this epoch, the
  // journal's turns (SettleTurns), limits.
  absl::Status CheckTurnHere(const TurnSpec& spec);
  // Drops the turns past `journal` (TurnSpec::committed_turns) of a session holding `here`;
  // DATA_LOSS if it holds fewer (its storage lost committed turns).
  absl::Status SettleTurns(const SessionId& id, uint32_t here, uint32_t journal);
  // Whether the pool can hold what the turn may need, spilling idle sessions to make room (false:
  // wait for running turns). RESOURCE_EXHAUSTED if it can never fit. Sets r.reserve_blocks.
  absl::StatusOr<bool> MakeRoom(Running& r);
  // BeginTurn (restoring the session if it was spilled) and the turn's decoder.
  absl::Status Begin(Running& r);

  // Stepping (scheduler_step.cc). One engine step over the running turns; whether it did
  // anything.
  bool StepOnce();
  struct Batch {
    std::vector<Engine::Work> work;
    std::vector<Running*> owners;  // per work item
    int64_t prefill = 0;
    int32_t decode_rows = 0;
  };
  void DropCancelled();  // cancelled running turns leave and roll back
  Batch PlanBatch();     // decode rows first, then prompt chunks, within step_tokens
  // Applies the outcome of one engine step over `owners`' turns: on success samples each turn's
  // next token (and finishes turns that are done); on failure FailStep.
  void Advance(const std::vector<Running*>& owners, const absl::Status& st, const ForwardResult& fr,
               int64_t prefill, int32_t decode_rows);
  // The turn's next token from its logits, streamed; whether the turn is done.
  bool Sample(Running& r, std::span<const float> logits);
  // A failed step: DATA_LOSS requeues each turn once from its token log; else each turn fails.
  void FailStep(const std::vector<Running*>& owners, const absl::Status& st);
  std::unique_ptr<Running> TakeRunning(Running* r);  // out of running_
  // Commits the turns (one synced write for all: SessionManager::CommitTurns) and reports each.
  void Finish(std::span<Running* const> done);
  void Fail(Running& r, const absl::Status& status);
  std::vector<SessionId> Busy() const;
  void SyncRunning();  // publishes running_.size() to stats_
  void RunTasks();

  Engine* engine_;
  SessionManager* sessions_;
  const SchedulerOptions options_;

  mutable std::mutex mu_;  // guards queue_, tasks_, stop_, stats_ (copy), last_progress_
  std::condition_variable cv_;
  std::deque<Queued> queue_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  uint64_t order_ = 0;
  SchedulerStats stats_;
  double last_progress_ = 0;
  std::atomic<int64_t> step_count_{0};
  bool has_work_ = false;

  // Compute thread only.
  std::vector<std::unique_ptr<Running>> running_;
  // The last step's output, kept so that its buffers (rows x vocab logits) are reused by the next
  // step instead of allocated, zeroed and page-faulted in every step.
  ForwardResult step_result_;
  double last_housekeeping_ = 0;
  std::vector<std::string> prefix_summary_;  // guarded by mu_
  std::thread thread_;
};

}  // namespace rsd
