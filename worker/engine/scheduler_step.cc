// One engine step over the running turns: cancelled turns leave, the batch is planned (decode rows
// first, then prompt chunks), the engine steps, and each turn takes its next token or fails.
// Split from scheduler.cc.
#include <algorithm>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/common/clock.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/scheduler_internal.h"

namespace rsd {

bool Scheduler::StepOnce() {
  DropCancelled();
  if (running_.empty()) return false;
  Batch batch = PlanBatch();
  if (batch.work.empty()) return false;
  ForwardResult& fr = step_result_;
  const absl::Status st = engine_->Step(batch.work, false, &fr);
  if (st.code() == absl::StatusCode::kResourceExhausted && batch.work.size() > 1) {
    // The batch as a whole did not fit the device (a workspace grows with the rows): its turns
    // run one at a time instead, so only a turn that cannot fit even alone fails. Batching never
    // changes a turn's bits, so this is exact.
    for (size_t i = 0; i < batch.work.size(); ++i) {
      const bool decoding = !batch.owners[i]->decoder->tokens().empty();
      ForwardResult one;
      const absl::Status st1 =
          engine_->Step(std::span<const Engine::Work>(&batch.work[i], 1), false, &one);
      Advance({batch.owners[i]}, st1, one, decoding ? 0 : batch.work[i].pending_limit,
              decoding ? 1 : 0);
    }
    return true;
  }
  Advance(batch.owners, st, fr, batch.prefill, batch.decode_rows);
  return true;
}

void Scheduler::DropCancelled() {
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
}

Scheduler::Batch Scheduler::PlanBatch() {
  Batch b;
  int64_t budget = options_.step_tokens;
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
      b.work.push_back(Engine::Work{r->turn.id, {}, false, limit});
      b.owners.push_back(r.get());
      budget -= limit;
      if (decoding) {
        b.decode_rows++;
      } else {
        b.prefill += limit;
      }
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.paused_steps += paused;
  return b;
}

std::unique_ptr<Scheduler::Running> Scheduler::TakeRunning(Running* r) {
  auto it =
      std::find_if(running_.begin(), running_.end(), [&](const auto& x) { return x.get() == r; });
  std::unique_ptr<Running> own = std::move(*it);
  running_.erase(it);
  SyncRunning();
  return own;
}

void Scheduler::Advance(const std::vector<Running*>& owners, const absl::Status& st,
                        const ForwardResult& fr, int64_t prefill, int32_t decode_rows) {
  if (!st.ok()) return FailStep(owners, st);
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
    if (Sample(*r, logits)) finished.push_back(r);
  }
  std::vector<std::unique_ptr<Running>> owned;
  for (Running* r : finished) owned.push_back(TakeRunning(r));
  Finish(finished);
}

bool Scheduler::Sample(Running& r, std::span<const float> logits) {
  const int64_t position = static_cast<int64_t>(engine_->SequenceTokens(r.turn.id).size());
  const bool done = r.decoder->Next(logits, position);
  const int32_t tok = r.decoder->tokens().back();
  engine_->AppendPending(r.turn.id, std::span<const int32_t>(&tok, 1));
  if (r.first_token == 0) r.first_token = MonotonicSeconds();
  TurnEvent ev;
  ev.offset = static_cast<int64_t>(r.decoder->tokens().size()) - 1;
  ev.tokens = {tok};
  ev.text_offset = r.text_offset;
  ev.text = done ? std::string() : r.decoder->TakeText();
  r.text_offset += static_cast<int64_t>(ev.text.size());
  if (ev.offset >= r.q.skip_tokens) r.q.stream->Push(std::move(ev));
  return done;
}

void Scheduler::FailStep(const std::vector<Running*>& owners, const absl::Status& st) {
  // A checkpoint that failed to load (DATA_LOSS): it is not known which turn's it was, so every
  // session of the batch drops its checkpoints and its turn runs again, once, from the token log.
  // Anything else (out of device memory for a turn alone, a device fault) fails the batch's
  // turns; each rolls back.
  for (Running* r : owners) {
    std::unique_ptr<Running> own = TakeRunning(r);
    if (st.code() == absl::StatusCode::kDataLoss && own->q.attempts == 0) {
      absl::Status rb = sessions_->AbortTurn(own->turn);
      if (rb.ok()) rb = sessions_->ResetToTokens(own->turn.id, st);
      if (rb.ok()) {
        own->q.attempts++;
        own->q.skip_tokens = std::max<int64_t>(own->q.skip_tokens,
                                               static_cast<int64_t>(own->decoder->tokens().size()));
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_front(std::move(own->q));
        stats_.queue_depth = static_cast<int32_t>(queue_.size());
        continue;
      }
    }
    Fail(*own, absl::Status(st.code(), absl::StrCat("engine step failed: ", st.message())));
  }
}

}  // namespace rsd
