// A fake rsd.v1.Worker for router tests: sessions in memory; each turn "generates" the message's
// bytes as token ids and text, and appends 100 tokens to the session's log (the message's bytes
// twice, then padding 7), so history_tokens is 100 per turn. Export/Import stream the log as a
// real worker's token form would (header, `export_blocks` dummy blocks, trailer with the digest).
// Knobs: `fail` (every Chat returns it), `block_until_cancelled`, `turn_delay_ms`,
// `fail_after_first_delta` (UNAVAILABLE after one delta: a worker dying mid-turn),
// `fail_after_commit` (the turn is committed here, then UNAVAILABLE before the TurnDone: a worker
// dying between its commit and its reply). Like a real worker, a Chat naming `committed_turns`
// drops the turns past them first (DATA_LOSS if it holds fewer).
// `export_delay_ms`, `corrupt_export` (bad digest), `truncate_export` (no trailer),
// `export_fail` / `import_fail`, `model_fingerprint`. Deduplicated migration: HeldPrefix answers
// `held_chunks` (at most the keys offered); an import that leaves chunks out is ABORTED while
// `abort_shared_imports` (the held chunks gone meanwhile).
// FakeWorker has no transport (absl::Status results, callbacks for streams): FakeWorkerService
// (fake_worker_service.h) serves it over gRPC, and MemoryWorkers (memory_workers.h) hands it to
// the router core directly.
// Thread-safe (mu_ guards the recorded requests, the sessions and the non-atomic knobs).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "proto/state_stream.h"
#include "rsd/v1/worker.pb.h"

namespace rsd::router::testing {

namespace v1 = ::rsd::v1;

class FakeWorker {
 public:
  struct Session {
    uint64_t epoch = 0;
    std::string tenant;
    std::vector<int32_t> log;
    std::vector<int64_t> turn_ends;
    uint32_t turns() const { return static_cast<uint32_t>(turn_ends.size()); }
  };

  explicit FakeWorker(std::string id) : id_(std::move(id)) {}

  using Cancelled = std::function<bool()>;
  template <typename T>
  using Write = std::function<bool(const T&)>;

  absl::Status OpenSession(const v1::OpenSessionRequest* req, v1::SessionInfo* resp) {
    absl::MutexLock l(&mu_);
    opened_.push_back(*req);
    Session& s = sessions_[req->ref().session_id()];
    s = Session();
    s.epoch = req->ref().epoch();
    s.tenant = req->ref().tenant();
    resp->set_session_id(req->ref().session_id());
    resp->set_state("new");
    return absl::OkStatus();
  }

  absl::Status Chat(const v1::WorkerChatRequest* req, const Cancelled& cancelled,
                    const Write<v1::ChatEvent>& write) {
    {
      absl::MutexLock l(&mu_);
      chats_.push_back(*req);
      if (!fail.ok()) return fail;
      absl::Status s = CheckLocked(req->ref());
      if (!s.ok()) return s;
      if (req->has_committed_turns()) {
        Session& session = sessions_[req->ref().session_id()];
        if (session.turns() < req->committed_turns()) {
          return absl::DataLossError("fake worker: behind the journal");
        }
        while (session.turns() > req->committed_turns()) {
          session.turn_ends.pop_back();
          session.log.resize(session.turn_ends.empty() ? 0 : session.turn_ends.back());
          ++dropped_turns;
        }
      }
    }
    if (block_until_cancelled) {
      while (!cancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      saw_cancel = true;
      return absl::CancelledError("cancelled");
    }
    if (turn_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(turn_delay_ms));
    const std::string& msg = req->turn().message();
    v1::TurnDone done;
    for (size_t i = 0; i < msg.size(); ++i) {
      v1::ChatEvent ev;
      ev.mutable_delta()->set_offset(i);
      ev.mutable_delta()->add_tokens(static_cast<uint8_t>(msg[i]));
      ev.mutable_delta()->set_text_offset(i);
      ev.mutable_delta()->set_text(msg.substr(i, 1));
      write(ev);
      if (fail_after_first_delta) return absl::UnavailableError("fake worker: connection reset");
      done.add_tokens(static_cast<uint8_t>(msg[i]));
    }
    std::vector<int32_t> appended;
    for (char c : msg) appended.push_back(static_cast<uint8_t>(c));
    for (char c : msg) appended.push_back(static_cast<uint8_t>(c));
    appended.resize(100, 7);
    uint32_t turn = 0;
    int64_t history = 0;
    {
      absl::MutexLock l(&mu_);
      Session& s = sessions_[req->ref().session_id()];
      s.log.insert(s.log.end(), appended.begin(), appended.end());
      s.turn_ends.push_back(static_cast<int64_t>(s.log.size()));
      turn = s.turns();
      history = static_cast<int64_t>(s.log.size());
    }
    if (fail_after_commit) return absl::UnavailableError("fake worker: died after its commit");
    done.set_turn(turn);
    done.set_finish_reason("length");
    done.set_text(msg);
    done.set_seed(req->turn().sampling().seed());
    done.mutable_usage()->set_prompt_tokens(5);
    done.mutable_usage()->set_completion_tokens(msg.size());
    done.mutable_usage()->set_history_tokens(history);
    done.mutable_log_tokens()->Assign(appended.begin(), appended.end());
    v1::ChatEvent ev;
    *ev.mutable_done() = done;
    write(ev);
    return absl::OkStatus();
  }

  absl::Status DescribeSession(const v1::SessionRef* ref, v1::SessionInfo* resp) {
    absl::MutexLock l(&mu_);
    auto it = sessions_.find(ref->session_id());
    if (it == sessions_.end()) return absl::NotFoundError("fake worker: unknown session");
    resp->set_session_id(ref->session_id());
    resp->set_turns(it->second.turns());
    resp->set_token_count(static_cast<int64_t>(it->second.log.size()));
    resp->mutable_bytes()->set_hot(4096);
    resp->set_state("hot");
    return absl::OkStatus();
  }

  absl::Status CloseSession(const v1::SessionRef* ref, v1::SessionInfo* resp) {
    absl::MutexLock l(&mu_);
    closed_.push_back(ref->session_id());
    closed_refs_.push_back(*ref);
    sessions_.erase(ref->session_id());
    return absl::OkStatus();
  }

  absl::Status UndoTurn(const v1::SessionRef* ref, v1::SessionInfo* resp) {
    absl::MutexLock l(&mu_);
    Session& s = sessions_[ref->session_id()];
    if (s.turns() == 0) return absl::FailedPreconditionError("fake: no turn to undo");
    s.turn_ends.pop_back();
    s.log.resize(s.turn_ends.empty() ? 0 : s.turn_ends.back());
    resp->set_session_id(ref->session_id());
    resp->set_turns(s.turns());
    return absl::OkStatus();
  }

  absl::Status ExportSession(const v1::ExportSessionRequest* req,
                             const Write<v1::StateChunk>& write) {
    SessionState state;
    {
      absl::MutexLock l(&mu_);
      exports_.push_back(*req);
      if (!export_fail.ok()) return export_fail;
      absl::Status s = CheckLocked(req->ref());
      if (!s.ok()) return s;
      const Session& session = sessions_[req->ref().session_id()];
      state.id = *ParseSessionId(req->ref().session_id());
      state.attrs.tenant = req->ref().tenant();
      state.model_fingerprint = model_fingerprint;
      state.numerics_fingerprint = "fake-numerics";
      state.form = *ParseSpillForm(req->form().empty() ? "auto" : req->form());
      state.tokens = session.log;
      state.turn_ends = session.turn_ends;
      // One chunk of one token per layer: a header the blocks fit (importers check that).
      if (!state.tokens.empty() && export_blocks > 0) {
        state.plan = *LayerPlan::Parse(std::string(export_blocks, 'k'), export_blocks);
        state.block_tokens = 1;
        state.n_chunks = 1;
        for (int i = 0; i < export_blocks; ++i) {
          state.blocks.push_back(
              {static_cast<uint32_t>(i), 0, std::string(1000, static_cast<char>('a' + i))});
        }
      }
    }
    if (export_delay_ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(export_delay_ms));
    }
    // The real codec, with the trailer damaged or dropped on request.
    (void)WriteStateStream(std::move(state), req->target_epoch(), [&](const v1::StateChunk& c) {
      if (!c.has_trailer()) return write(c);
      if (truncate_export) return false;
      v1::StateChunk tail = c;
      tail.mutable_trailer()->set_digest(c.trailer().digest() + (corrupt_export ? 1 : 0));
      return write(tail);
    });
    return absl::OkStatus();
  }

  // `read` yields the stream's chunks (false at its end).
  absl::Status ImportSession(const std::function<bool(v1::StateChunk*)>& read_chunk,
                             v1::ImportSessionResponse* resp) {
    std::vector<v1::StateChunk> chunks;
    v1::StateChunk c;
    StateStreamReader stream;
    absl::Status read = absl::OkStatus();
    while (read_chunk(&c)) {
      chunks.push_back(c);
      if (read.ok()) read = stream.Add(c);
    }
    absl::MutexLock l(&mu_);
    imports_.push_back(chunks);
    if (!import_fail.ok()) return import_fail;
    absl::StatusOr<SessionState> state = read.ok() ? stream.Finish() : read;
    if (!state.ok()) {
      return absl::Status(state.status().code(),
                          absl::StrCat("fake worker: ", state.status().message()));
    }
    if (state->shared_chunks > 0 && abort_shared_imports) {
      return absl::AbortedError("fake worker: the shared chunks are not here any more");
    }
    if (state->model_fingerprint != model_fingerprint) {
      return absl::FailedPreconditionError(absl::StrCat("fake worker: model fingerprint ",
                                                        state->model_fingerprint, " is not ",
                                                        model_fingerprint));
    }
    const std::string hex = state->id.ToHex();
    auto existing = sessions_.find(hex);
    if (existing != sessions_.end() && existing->second.epoch >= state->attrs.epoch) {
      return absl::FailedPreconditionError("fake worker: have a copy");
    }
    int64_t payload = 0;
    for (const SessionState::Block& b : state->blocks)
      payload += static_cast<int64_t>(b.value.size());
    Session& s = sessions_[hex];
    s.epoch = state->attrs.epoch;
    s.tenant = state->attrs.tenant;
    s.log = state->tokens;
    s.turn_ends = state->turn_ends;
    resp->mutable_session()->set_session_id(hex);
    resp->mutable_session()->set_turns(s.turns());
    resp->mutable_session()->set_token_count(static_cast<int64_t>(s.log.size()));
    resp->set_form(SpillFormName(state->form));
    resp->set_blocks(static_cast<int64_t>(state->blocks.size()));
    resp->set_payload_bytes(payload);
    resp->set_framing_bytes(16 * static_cast<int64_t>(state->blocks.size()));
    resp->set_token_bytes(4 * static_cast<int64_t>(state->tokens.size()));
    resp->set_wire_bytes(stream.wire_bytes());
    resp->set_shared_tokens(int64_t{state->shared_chunks} * state->block_tokens);
    return absl::OkStatus();
  }

  absl::Status HeldPrefix(const v1::HeldPrefixRequest* req, v1::HeldPrefixResponse* resp) {
    held_offers++;
    resp->set_chunks(std::min(held_chunks.load(), req->keys_size()));
    return absl::OkStatus();
  }

  // The worker loses the session (a restart on an empty data dir).
  void Forget(const std::string& session_id) {
    absl::MutexLock l(&mu_);
    sessions_.erase(session_id);
  }

  bool Has(const std::string& session_id) {
    absl::MutexLock l(&mu_);
    return sessions_.count(session_id) > 0;
  }

  Session Get(const std::string& session_id) {
    absl::MutexLock l(&mu_);
    return sessions_[session_id];
  }

  size_t chat_count() {
    absl::MutexLock l(&mu_);
    return chats_.size();
  }
  size_t open_count() {
    absl::MutexLock l(&mu_);
    return opened_.size();
  }

  // Copies of the requests recorded so far (a test reads them while the router may still call).
  std::vector<v1::OpenSessionRequest> Opened() { return Copy(opened_); }
  std::vector<v1::WorkerChatRequest> Chats() { return Copy(chats_); }
  std::vector<std::string> Closed() { return Copy(closed_); }
  std::vector<v1::SessionRef> ClosedRefs() { return Copy(closed_refs_); }
  std::vector<v1::ExportSessionRequest> Exports() { return Copy(exports_); }
  std::vector<std::vector<v1::StateChunk>> Imports() { return Copy(imports_); }

  absl::Mutex mu_;
  absl::Status fail = absl::OkStatus();
  absl::Status export_fail = absl::OkStatus();
  absl::Status import_fail = absl::OkStatus();
  std::string model_fingerprint = "fp-smol";
  int export_blocks = 2;
  std::atomic<bool> block_until_cancelled{false};
  std::atomic<bool> saw_cancel{false};
  std::atomic<bool> fail_after_first_delta{false};
  std::atomic<bool> fail_after_commit{false};
  std::atomic<int> dropped_turns{0};
  std::atomic<bool> corrupt_export{false};
  std::atomic<bool> truncate_export{false};
  std::atomic<int> turn_delay_ms{0};
  std::atomic<int> export_delay_ms{0};
  std::atomic<int> held_chunks{0};
  std::atomic<bool> abort_shared_imports{false};
  std::atomic<int> held_offers{0};

 private:
  template <typename T>
  std::vector<T> Copy(const std::vector<T>& recorded) {
    absl::MutexLock l(&mu_);
    return recorded;
  }

  // NOT_FOUND for an unknown session; FAILED_PRECONDITION for another epoch (a stale owner).
  absl::Status CheckLocked(const v1::SessionRef& ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = sessions_.find(ref.session_id());
    if (it == sessions_.end()) return absl::NotFoundError("fake worker: unknown session");
    if (it->second.epoch != ref.epoch()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "fake worker: stale owner (epoch ", ref.epoch(), ", have ", it->second.epoch, ")"));
    }
    return absl::OkStatus();
  }

  std::string id_;
  std::map<std::string, Session> sessions_;
  // What the router asked, in order (Opened() etc. copy them).
  std::vector<v1::OpenSessionRequest> opened_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::WorkerChatRequest> chats_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> closed_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::SessionRef> closed_refs_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ExportSessionRequest> exports_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<v1::StateChunk>> imports_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rsd::router::testing
