// What the router core asks of a worker, without a transport: the calls it makes (open, chat,
// describe, close, undo, export, import) as absl::Status results and streams. The gRPC
// implementation is grpc_worker_client.h; router tests also run the core against in-memory
// workers. A worker's refusal comes back with its code and message unchanged; a worker that cannot
// be reached is UNAVAILABLE.
//
// Thread safety: a WorkerClient is thread-safe; a stream belongs to one thread, except Cancel,
// which any thread may call while another reads or writes.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rsd/v1/worker.pb.h"

namespace rsd::router {

namespace v1 = ::rsd::v1;

// A streaming call's bounds: its deadline, and a check for the caller having gone away that the
// stream polls while it waits (true: the call is cancelled, so the worker stops working on it).
struct CallScope {
  absl::Time deadline = absl::InfiniteFuture();
  std::function<bool()> cancelled;  // null: never
};

// A server stream being read (a turn's events, an exported state stream).
template <typename T>
class ReadStream {
 public:
  virtual ~ReadStream() = default;
  // The next message; false at the end of the stream (then Finish says how it ended).
  virtual bool Read(T* out) = 0;
  // The call's outcome; once Read returned false, or after Cancel.
  virtual absl::Status Finish() = 0;
  // Ends the call early (the worker sees a cancelled call). Any thread.
  virtual void Cancel() = 0;
};

// A client stream being written (a state stream into a worker's import).
class ImportStream {
 public:
  virtual ~ImportStream() = default;
  // False: the worker stopped reading; Finish says why.
  virtual bool Write(const v1::StateChunk& chunk) = 0;
  // Closes the stream and waits for the worker's answer.
  virtual absl::StatusOr<v1::ImportSessionResponse> Finish() = 0;
  // Abandons the stream: the worker keeps nothing. Finish may still be called.
  virtual void Cancel() = 0;
};

class WorkerClient {
 public:
  virtual ~WorkerClient() = default;
  virtual absl::StatusOr<v1::SessionInfo> OpenSession(const v1::OpenSessionRequest& req,
                                                      absl::Time deadline) = 0;
  virtual absl::StatusOr<v1::SessionInfo> DescribeSession(const v1::SessionRef& ref,
                                                          absl::Time deadline) = 0;
  virtual absl::StatusOr<v1::SessionInfo> CloseSession(const v1::SessionRef& ref,
                                                       absl::Time deadline) = 0;
  virtual absl::StatusOr<v1::SessionInfo> UndoTurn(const v1::SessionRef& ref,
                                                   absl::Time deadline) = 0;
  virtual std::unique_ptr<ReadStream<v1::ChatEvent>> Chat(const v1::WorkerChatRequest& req,
                                                          const CallScope& scope) = 0;
  virtual std::unique_ptr<ReadStream<v1::StateChunk>> ExportSession(
      const v1::ExportSessionRequest& req, absl::Time deadline) = 0;
  virtual std::unique_ptr<ImportStream> ImportSession(absl::Time deadline) = 0;
  // The worker exports and streams the state to the target itself; the target's answer.
  virtual absl::StatusOr<v1::ImportSessionResponse> SendSession(const v1::SendSessionRequest& req,
                                                                absl::Time deadline) = 0;
  // The chain keys of a first turn's reusable leading chunks (cache-aware placement).
  virtual absl::StatusOr<v1::PromptKeysResponse> PromptKeys(const v1::PromptKeysRequest& req,
                                                            absl::Time deadline) {
    return absl::UnimplementedError("this worker client computes no prompt keys");
  }
  // How many leading chunks of an offered session the worker holds (deduplicated migration).
  virtual absl::StatusOr<v1::HeldPrefixResponse> HeldPrefix(const v1::HeldPrefixRequest& req,
                                                            absl::Time deadline) {
    return absl::UnimplementedError("this worker client answers no prefix offers");
  }
};

// The client for the worker at an address (what workers register with). Implementations cache one
// per address. Thread-safe.
class WorkerClients {
 public:
  virtual ~WorkerClients() = default;
  virtual std::shared_ptr<WorkerClient> At(const std::string& address) = 0;
  // A worker (re)registered at `address`: a connection that failed while it was down is tried
  // again at once instead of after the channel's reconnect backoff.
  virtual void Reconnect(const std::string& address) {}
};

}  // namespace rsd::router
