// A fake rsd.v1.Worker for router tests: sessions in memory; each turn "generates" the message's
// bytes as token ids and text. Knobs: `fail` (every Chat returns it), `block_until_cancelled`.
// Thread-safe (mu_ guards the recorded requests and the knobs other than the atomics).
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "rsd/v1/worker.grpc.pb.h"

namespace rsd::router::testing {

namespace v1 = ::rsd::v1;

// A worker that answers from memory: each turn generates the message's bytes as token ids.
class FakeWorker final : public v1::Worker::Service {
 public:
  explicit FakeWorker(std::string id) : id_(std::move(id)) {}

  grpc::Status OpenSession(grpc::ServerContext*, const v1::OpenSessionRequest* req,
                           v1::SessionInfo* resp) override {
    absl::MutexLock l(&mu_);
    opened.push_back(*req);
    turns_[req->ref().session_id()] = 0;
    resp->set_session_id(req->ref().session_id());
    resp->set_state("new");
    return grpc::Status::OK;
  }

  grpc::Status Chat(grpc::ServerContext* ctx, const v1::WorkerChatRequest* req,
                    grpc::ServerWriter<v1::ChatEvent>* writer) override {
    uint32_t turn = 0;
    {
      absl::MutexLock l(&mu_);
      chats.push_back(*req);
      if (!fail.ok()) return fail;
      if (!turns_.count(req->ref().session_id())) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "fake worker: unknown session");
      }
      turn = ++turns_[req->ref().session_id()];
    }
    if (block_until_cancelled) {
      while (!ctx->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      saw_cancel = true;
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    const std::string& msg = req->turn().message();
    v1::TurnDone done;
    for (size_t i = 0; i < msg.size(); ++i) {
      v1::ChatEvent ev;
      ev.mutable_delta()->set_offset(i);
      ev.mutable_delta()->add_tokens(static_cast<uint8_t>(msg[i]));
      ev.mutable_delta()->set_text_offset(i);
      ev.mutable_delta()->set_text(msg.substr(i, 1));
      writer->Write(ev);
      done.add_tokens(static_cast<uint8_t>(msg[i]));
    }
    done.set_turn(turn);
    done.set_finish_reason("length");
    done.set_text(msg);
    done.set_seed(req->turn().sampling().seed());
    done.mutable_usage()->set_prompt_tokens(5);
    done.mutable_usage()->set_completion_tokens(msg.size());
    done.mutable_usage()->set_history_tokens(100 * turn);
    v1::ChatEvent ev;
    *ev.mutable_done() = done;
    writer->Write(ev);
    return grpc::Status::OK;
  }

  grpc::Status DescribeSession(grpc::ServerContext*, const v1::SessionRef* ref,
                               v1::SessionInfo* resp) override {
    absl::MutexLock l(&mu_);
    if (!turns_.count(ref->session_id())) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "fake worker: unknown session");
    }
    resp->set_session_id(ref->session_id());
    resp->set_turns(turns_[ref->session_id()]);
    resp->set_token_count(100 * turns_[ref->session_id()]);
    resp->mutable_bytes()->set_hot(4096);
    resp->set_state("hot");
    return grpc::Status::OK;
  }

  grpc::Status CloseSession(grpc::ServerContext*, const v1::SessionRef* ref,
                            v1::SessionInfo* resp) override {
    absl::MutexLock l(&mu_);
    closed.push_back(ref->session_id());
    turns_.erase(ref->session_id());
    return grpc::Status::OK;
  }

  grpc::Status UndoTurn(grpc::ServerContext*, const v1::SessionRef* ref,
                        v1::SessionInfo* resp) override {
    absl::MutexLock l(&mu_);
    uint32_t& n = turns_[ref->session_id()];
    if (n == 0) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "fake: no turn to undo");
    --n;
    resp->set_session_id(ref->session_id());
    resp->set_turns(n);
    return grpc::Status::OK;
  }

  // The worker loses the session (a restart on an empty data dir).
  void Forget(const std::string& session_id) {
    absl::MutexLock l(&mu_);
    turns_.erase(session_id);
  }

  size_t chat_count() {
    absl::MutexLock l(&mu_);
    return chats.size();
  }

  absl::Mutex mu_;
  std::vector<v1::OpenSessionRequest> opened;
  std::vector<v1::WorkerChatRequest> chats;
  std::vector<std::string> closed;
  grpc::Status fail = grpc::Status::OK;
  std::atomic<bool> block_until_cancelled{false};
  std::atomic<bool> saw_cancel{false};

 private:
  std::string id_;
  std::map<std::string, uint32_t> turns_;
};

}  // namespace rsd::router::testing
