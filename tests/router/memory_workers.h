// WorkerClients over FakeWorkers (fake_worker.h) in this process, with no transport: how the router
// core's tests reach workers. An address with no worker, or one marked down, answers UNAVAILABLE as
// an unreachable worker would. A turn's stream runs the fake on its own thread, so that the core
// reads events while they are produced and a cancelled caller, Cancel or the deadline stops it.
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "router/worker_client.h"
#include "storage/common/status.h"
#include "tests/router/fake_worker.h"

namespace rsd::router::testing {

// A fake's turn on its own thread, its events queued for Read.
class MemoryChatStream final : public ReadStream<v1::ChatEvent> {
 public:
  MemoryChatStream(FakeWorker* worker, v1::WorkerChatRequest req, CallScope scope)
      : scope_(std::move(scope)) {
    thread_ = std::thread([this, worker, req = std::move(req)] {
      absl::Status s = worker->Chat(
          &req, [this] { return Stopped(); },
          [this](const v1::ChatEvent& ev) {
            std::lock_guard<std::mutex> l(mu_);
            if (cancelled_) return false;
            queue_.push_back(ev);
            cv_.notify_all();
            return true;
          });
      std::lock_guard<std::mutex> l(mu_);
      status_ = s;
      done_ = true;
      cv_.notify_all();
    });
  }
  ~MemoryChatStream() override {
    Cancel();
    thread_.join();
  }

  bool Read(v1::ChatEvent* out) override {
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      if (!queue_.empty()) {
        *out = std::move(queue_.front());
        queue_.pop_front();
        return true;
      }
      if (done_ || cancelled_) return false;
      cv_.wait_for(l, std::chrono::milliseconds(10));
      if (PastDeadline() || (scope_.cancelled && scope_.cancelled())) cancelled_ = true;
    }
  }
  absl::Status Finish() override {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [this] { return done_; });
    if (PastDeadline()) return absl::DeadlineExceededError("memory worker: deadline exceeded");
    if (cancelled_) return absl::CancelledError("memory worker: cancelled");
    return status_;
  }
  void Cancel() override {
    std::lock_guard<std::mutex> l(mu_);
    cancelled_ = true;
    cv_.notify_all();
  }

 private:
  bool PastDeadline() const { return absl::Now() >= scope_.deadline; }
  bool Stopped() {
    std::lock_guard<std::mutex> l(mu_);
    if (PastDeadline() || (scope_.cancelled && scope_.cancelled())) cancelled_ = true;
    return cancelled_;
  }

  const CallScope scope_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::ChatEvent> queue_;
  bool done_ = false;
  bool cancelled_ = false;
  absl::Status status_;
  std::thread thread_;
};

// A stream to a worker that cannot be reached: it ends at once with `status`.
template <typename T>
class FailedStream final : public ReadStream<T> {
 public:
  explicit FailedStream(absl::Status status) : status_(std::move(status)) {}
  bool Read(T*) override { return false; }
  absl::Status Finish() override { return status_; }
  void Cancel() override {}

 private:
  absl::Status status_;
};

// An export run to its end up front, then read.
class MemoryExportStream final : public ReadStream<v1::StateChunk> {
 public:
  MemoryExportStream(std::vector<v1::StateChunk> chunks, absl::Status status)
      : chunks_(std::move(chunks)), status_(std::move(status)) {}
  bool Read(v1::StateChunk* out) override {
    if (cancelled_ || next_ == chunks_.size()) return false;
    *out = chunks_[next_++];
    return true;
  }
  absl::Status Finish() override {
    return cancelled_ ? absl::CancelledError("memory worker: cancelled") : status_;
  }
  void Cancel() override { cancelled_ = true; }

 private:
  std::vector<v1::StateChunk> chunks_;
  size_t next_ = 0;
  absl::Status status_;
  bool cancelled_ = false;
};

// Chunks collected, then handed to the fake's import on Finish.
class MemoryImportStream final : public ImportStream {
 public:
  explicit MemoryImportStream(absl::StatusOr<FakeWorker*> worker) : worker_(std::move(worker)) {}
  bool Write(const v1::StateChunk& chunk) override {
    chunks_.push_back(chunk);
    return true;
  }
  absl::StatusOr<v1::ImportSessionResponse> Finish() override {
    if (cancelled_) return absl::CancelledError("memory worker: import cancelled");
    if (!worker_.ok()) return worker_.status();
    size_t next = 0;
    v1::ImportSessionResponse resp;
    absl::Status s = (*worker_)->ImportSession(
        [&](v1::StateChunk* c) {
          if (next == chunks_.size()) return false;
          *c = chunks_[next++];
          return true;
        },
        &resp);
    if (!s.ok()) return s;
    return resp;
  }
  void Cancel() override { cancelled_ = true; }

 private:
  absl::StatusOr<FakeWorker*> worker_;
  std::vector<v1::StateChunk> chunks_;
  bool cancelled_ = false;
};

class MemoryWorkers final : public WorkerClients {
 public:
  // `worker` (outliving this) answers at `address`.
  void Add(const std::string& address, FakeWorker* worker) {
    absl::MutexLock l(&mu_);
    workers_[address] = worker;
  }
  // While down, every call to `address` is UNAVAILABLE (a stopped process).
  void SetDown(const std::string& address, bool down) {
    absl::MutexLock l(&mu_);
    down_[address] = down;
  }
  // While fenced, other workers cannot reach `address` (SendSession to it is UNAVAILABLE); the
  // router still can.
  void SetFencedFromWorkers(const std::string& address, bool fenced) {
    absl::MutexLock l(&mu_);
    fenced_[address] = fenced;
  }
  // While set, a SendSession loses its reply: the source's export is taken, the caller gets
  // DEADLINE_EXCEEDED, and the target commits the import only at LandLateImports (after the
  // caller gave up), which returns how many it committed.
  void SetRepliesLost(bool lost) {
    absl::MutexLock l(&mu_);
    replies_lost_ = lost;
  }
  int LandLateImports() {
    std::vector<std::unique_ptr<ImportStream>> late;
    {
      absl::MutexLock l(&mu_);
      late.swap(late_imports_);
    }
    int landed = 0;
    for (auto& import : late) landed += import->Finish().ok() ? 1 : 0;
    return landed;
  }
  std::shared_ptr<WorkerClient> At(const std::string& address) override {
    return std::make_shared<Client>(this, address);
  }

 private:
  class Client final : public WorkerClient {
   public:
    Client(MemoryWorkers* all, std::string address) : all_(all), address_(std::move(address)) {}
    absl::StatusOr<v1::SessionInfo> OpenSession(const v1::OpenSessionRequest& req,
                                                absl::Time) override {
      return Unary([&](FakeWorker& w, v1::SessionInfo* out) { return w.OpenSession(&req, out); });
    }
    absl::StatusOr<v1::SessionInfo> DescribeSession(const v1::SessionRef& ref,
                                                    absl::Time) override {
      return Unary(
          [&](FakeWorker& w, v1::SessionInfo* out) { return w.DescribeSession(&ref, out); });
    }
    absl::StatusOr<v1::SessionInfo> CloseSession(const v1::SessionRef& ref, absl::Time) override {
      return Unary([&](FakeWorker& w, v1::SessionInfo* out) { return w.CloseSession(&ref, out); });
    }
    absl::StatusOr<v1::SessionInfo> UndoTurn(const v1::SessionRef& ref, absl::Time) override {
      return Unary([&](FakeWorker& w, v1::SessionInfo* out) { return w.UndoTurn(&ref, out); });
    }
    std::unique_ptr<ReadStream<v1::ChatEvent>> Chat(const v1::WorkerChatRequest& req,
                                                    const CallScope& scope) override {
      absl::StatusOr<FakeWorker*> w = all_->Find(address_);
      if (!w.ok()) return std::make_unique<FailedStream<v1::ChatEvent>>(w.status());
      return std::make_unique<MemoryChatStream>(*w, req, scope);
    }
    std::unique_ptr<ReadStream<v1::StateChunk>> ExportSession(const v1::ExportSessionRequest& req,
                                                              absl::Time) override {
      absl::StatusOr<FakeWorker*> w = all_->Find(address_);
      if (!w.ok()) return std::make_unique<FailedStream<v1::StateChunk>>(w.status());
      std::vector<v1::StateChunk> chunks;
      absl::Status s = (*w)->ExportSession(&req, [&](const v1::StateChunk& c) {
        chunks.push_back(c);
        return true;
      });
      return std::make_unique<MemoryExportStream>(std::move(chunks), s);
    }
    std::unique_ptr<ImportStream> ImportSession(absl::Time) override {
      return std::make_unique<MemoryImportStream>(all_->Find(address_));
    }
    absl::StatusOr<v1::HeldPrefixResponse> HeldPrefix(const v1::HeldPrefixRequest& req,
                                                      absl::Time) override {
      RSD_ASSIGN_OR_RETURN(FakeWorker * w, all_->Find(address_));
      v1::HeldPrefixResponse out;
      RSD_RETURN_IF_ERROR(w->HeldPrefix(&req, &out));
      return out;
    }
    // The fake exports and imports into the target fake directly, as a real worker streams.
    absl::StatusOr<v1::ImportSessionResponse> SendSession(const v1::SendSessionRequest& req,
                                                          absl::Time deadline) override {
      RSD_ASSIGN_OR_RETURN(FakeWorker * source, all_->Find(address_));
      absl::StatusOr<FakeWorker*> target = all_->Find(req.target_address());
      if (!target.ok() || all_->Fenced(req.target_address())) {
        return absl::UnavailableError(
            absl::StrCat("memory worker at ", address_, " cannot reach ", req.target_address()));
      }
      std::unique_ptr<ImportStream> import = std::make_unique<MemoryImportStream>(*target);
      RSD_RETURN_IF_ERROR(source->ExportSession(
          &req.source(), [&](const v1::StateChunk& c) { return import->Write(c); }));
      if (all_->KeepForLater(import)) {
        return absl::DeadlineExceededError(
            absl::StrCat("memory worker: the reply from ", req.target_address(), " was lost"));
      }
      return import->Finish();
    }

   private:
    template <typename Call>
    absl::StatusOr<v1::SessionInfo> Unary(const Call& call) {
      absl::StatusOr<FakeWorker*> w = all_->Find(address_);
      if (!w.ok()) return w.status();
      v1::SessionInfo out;
      absl::Status s = call(**w, &out);
      if (!s.ok()) return s;
      return out;
    }
    MemoryWorkers* all_;
    std::string address_;
  };

  absl::StatusOr<FakeWorker*> Find(const std::string& address) {
    absl::MutexLock l(&mu_);
    auto it = workers_.find(address);
    if (it == workers_.end() || down_[address]) {
      return absl::UnavailableError(absl::StrCat("memory worker at ", address, " is down"));
    }
    return it->second;
  }

  // Takes `import` for LandLateImports while replies are lost.
  bool KeepForLater(std::unique_ptr<ImportStream>& import) {
    absl::MutexLock l(&mu_);
    if (!replies_lost_) return false;
    late_imports_.push_back(std::move(import));
    return true;
  }

  bool Fenced(const std::string& address) {
    absl::MutexLock l(&mu_);
    return fenced_[address];
  }

  absl::Mutex mu_;
  std::map<std::string, FakeWorker*> workers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, bool> down_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, bool> fenced_ ABSL_GUARDED_BY(mu_);
  bool replies_lost_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<ImportStream>> late_imports_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rsd::router::testing
