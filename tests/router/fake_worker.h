// A fake rsd.v1.Worker for router tests: sessions in memory; each turn "generates" the message's
// bytes as token ids and text, and appends 100 tokens to the session's log (the message's bytes
// twice, then padding 7), so history_tokens is 100 per turn. Export/Import stream the log as a
// real worker's token form would (header, `export_blocks` dummy blocks, trailer with the digest).
// Knobs: `fail` (every Chat returns it), `block_until_cancelled`, `turn_delay_ms`,
// `fail_after_first_delta` (UNAVAILABLE after one delta: a worker dying mid-turn),
// `export_delay_ms`, `corrupt_export` (bad digest), `truncate_export` (no trailer),
// `export_fail` / `import_fail`, `model_fingerprint`.
// Thread-safe (mu_ guards the recorded requests, the sessions and the non-atomic knobs).
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "proto/state_stream.h"
#include "rsd/v1/worker.grpc.pb.h"

namespace rsd::router::testing {

namespace v1 = ::rsd::v1;

class FakeWorker final : public v1::Worker::Service {
 public:
  struct Session {
    uint64_t epoch = 0;
    std::string tenant;
    std::vector<int32_t> log;
    std::vector<int64_t> turn_ends;
    uint32_t turns() const { return static_cast<uint32_t>(turn_ends.size()); }
  };

  explicit FakeWorker(std::string id) : id_(std::move(id)) {}

  grpc::Status OpenSession(grpc::ServerContext*, const v1::OpenSessionRequest* req,
                           v1::SessionInfo* resp) override {
    absl::MutexLock l(&mu_);
    opened.push_back(*req);
    Session& s = sessions_[req->ref().session_id()];
    s = Session();
    s.epoch = req->ref().epoch();
    s.tenant = req->ref().tenant();
    resp->set_session_id(req->ref().session_id());
    resp->set_state("new");
    return grpc::Status::OK;
  }

  grpc::Status Chat(grpc::ServerContext* ctx, const v1::WorkerChatRequest* req,
                    grpc::ServerWriter<v1::ChatEvent>* writer) override {
    {
      absl::MutexLock l(&mu_);
      chats.push_back(*req);
      if (!fail.ok()) return fail;
      grpc::Status s = CheckLocked(req->ref());
      if (!s.ok()) return s;
    }
    if (block_until_cancelled) {
      while (!ctx->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      saw_cancel = true;
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
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
      writer->Write(ev);
      if (fail_after_first_delta) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake worker: connection reset");
      }
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
    writer->Write(ev);
    return grpc::Status::OK;
  }

  grpc::Status DescribeSession(grpc::ServerContext*, const v1::SessionRef* ref,
                               v1::SessionInfo* resp) override {
    absl::MutexLock l(&mu_);
    auto it = sessions_.find(ref->session_id());
    if (it == sessions_.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "fake worker: unknown session");
    }
    resp->set_session_id(ref->session_id());
    resp->set_turns(it->second.turns());
    resp->set_token_count(static_cast<int64_t>(it->second.log.size()));
    resp->mutable_bytes()->set_hot(4096);
    resp->set_state("hot");
    return grpc::Status::OK;
  }

  grpc::Status CloseSession(grpc::ServerContext*, const v1::SessionRef* ref,
                            v1::SessionInfo* resp) override {
    absl::MutexLock l(&mu_);
    closed.push_back(ref->session_id());
    closed_refs.push_back(*ref);
    sessions_.erase(ref->session_id());
    return grpc::Status::OK;
  }

  grpc::Status UndoTurn(grpc::ServerContext*, const v1::SessionRef* ref,
                        v1::SessionInfo* resp) override {
    absl::MutexLock l(&mu_);
    Session& s = sessions_[ref->session_id()];
    if (s.turns() == 0) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "fake: no turn to undo");
    }
    s.turn_ends.pop_back();
    s.log.resize(s.turn_ends.empty() ? 0 : s.turn_ends.back());
    resp->set_session_id(ref->session_id());
    resp->set_turns(s.turns());
    return grpc::Status::OK;
  }

  grpc::Status ExportSession(grpc::ServerContext*, const v1::ExportSessionRequest* req,
                             grpc::ServerWriter<v1::StateChunk>* writer) override {
    SessionState state;
    {
      absl::MutexLock l(&mu_);
      exports.push_back(*req);
      if (!export_fail.ok()) return export_fail;
      grpc::Status s = CheckLocked(req->ref());
      if (!s.ok()) return s;
      const Session& session = sessions_[req->ref().session_id()];
      state.id = *ParseSessionId(req->ref().session_id());
      state.attrs.tenant = req->ref().tenant();
      state.model_fingerprint = model_fingerprint;
      state.numerics_fingerprint = "fake-numerics";
      state.form = *ParseSpillForm(req->form().empty() ? "auto" : req->form());
      state.tokens = session.log;
      state.turn_ends = session.turn_ends;
      for (int i = 0; i < export_blocks; ++i) {
        state.blocks.push_back(
            {static_cast<uint32_t>(i), 0, std::string(1000, static_cast<char>('a' + i))});
      }
    }
    if (export_delay_ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(export_delay_ms));
    }
    // The real codec, with the trailer damaged or dropped on request.
    (void)WriteStateStream(std::move(state), req->target_epoch(), [&](const v1::StateChunk& c) {
      if (!c.has_trailer()) return writer->Write(c);
      if (truncate_export) return false;
      v1::StateChunk tail = c;
      tail.mutable_trailer()->set_digest(c.trailer().digest() + (corrupt_export ? 1 : 0));
      return writer->Write(tail);
    });
    return grpc::Status::OK;
  }

  grpc::Status ImportSession(grpc::ServerContext*, grpc::ServerReader<v1::StateChunk>* reader,
                             v1::ImportSessionResponse* resp) override {
    std::vector<v1::StateChunk> chunks;
    v1::StateChunk c;
    StateStreamReader stream;
    absl::Status read = absl::OkStatus();
    while (reader->Read(&c)) {
      chunks.push_back(c);
      if (read.ok()) read = stream.Add(c);
    }
    absl::MutexLock l(&mu_);
    imports.push_back(chunks);
    if (!import_fail.ok()) return import_fail;
    absl::StatusOr<SessionState> state = read.ok() ? stream.Finish() : read;
    if (!state.ok()) {
      return grpc::Status(static_cast<grpc::StatusCode>(state.status().code()),
                          absl::StrCat("fake worker: ", state.status().message()));
    }
    if (state->model_fingerprint != model_fingerprint) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("fake worker: model fingerprint ", state->model_fingerprint,
                                       " is not ", model_fingerprint));
    }
    const std::string hex = state->id.ToHex();
    auto existing = sessions_.find(hex);
    if (existing != sessions_.end() && existing->second.epoch >= state->attrs.epoch) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "fake worker: have a copy");
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
    return grpc::Status::OK;
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
    return chats.size();
  }

  absl::Mutex mu_;
  std::vector<v1::OpenSessionRequest> opened;
  std::vector<v1::WorkerChatRequest> chats;
  std::vector<std::string> closed;
  std::vector<v1::SessionRef> closed_refs;
  std::vector<v1::ExportSessionRequest> exports;
  std::vector<std::vector<v1::StateChunk>> imports;
  grpc::Status fail = grpc::Status::OK;
  grpc::Status export_fail = grpc::Status::OK;
  grpc::Status import_fail = grpc::Status::OK;
  std::string model_fingerprint = "fp-smol";
  int export_blocks = 2;
  std::atomic<bool> block_until_cancelled{false};
  std::atomic<bool> saw_cancel{false};
  std::atomic<bool> fail_after_first_delta{false};
  std::atomic<bool> corrupt_export{false};
  std::atomic<bool> truncate_export{false};
  std::atomic<int> turn_delay_ms{0};
  std::atomic<int> export_delay_ms{0};

 private:
  // NOT_FOUND for an unknown session; FAILED_PRECONDITION for another epoch (a stale owner).
  grpc::Status CheckLocked(const v1::SessionRef& ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = sessions_.find(ref.session_id());
    if (it == sessions_.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "fake worker: unknown session");
    }
    if (it->second.epoch != ref.epoch()) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("fake worker: stale owner (epoch ", ref.epoch(), ", have ",
                                       it->second.epoch, ")"));
    }
    return grpc::Status::OK;
  }

  std::string id_;
  std::map<std::string, Session> sessions_;
};

}  // namespace rsd::router::testing
