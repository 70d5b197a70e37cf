#include "router/grpc_worker_client.h"

#include <chrono>
#include <functional>
#include <utility>

#include "grpcpp/grpcpp.h"
#include "proto/grpc_status.h"

namespace rsd::router {
namespace {

void SetDeadline(grpc::ClientContext* ctx, absl::Time deadline) {
  if (deadline != absl::InfiniteFuture()) ctx->set_deadline(absl::ToChronoTime(deadline));
}

// A server stream read through a completion queue, so that waiting can poll the caller's
// cancellation: one operation outstanding at a time.
template <typename T>
class AsyncReadStream final : public ReadStream<T> {
 public:
  using Start = std::function<std::unique_ptr<grpc::ClientAsyncReader<T>>(grpc::ClientContext*,
                                                                          grpc::CompletionQueue*)>;
  AsyncReadStream(const CallScope& scope, const Start& start) : cancelled_(scope.cancelled) {
    SetDeadline(&ctx_, scope.deadline);
    reader_ = start(&ctx_, &cq_);
    reader_->StartCall(this);
    open_ = Wait();
  }
  ~AsyncReadStream() override {
    if (!finished_) {
      ctx_.TryCancel();
      (void)Finish();
    }
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }

  bool Read(T* out) override {
    if (!open_) return false;
    reader_->Read(out, this);
    open_ = Wait();
    return open_;
  }
  absl::Status Finish() override {
    if (finished_) return status_;
    grpc::Status s;
    reader_->Finish(&s, this);
    (void)Wait();
    finished_ = true;
    open_ = false;
    status_ = FromGrpc(s);
    return status_;
  }
  void Cancel() override { ctx_.TryCancel(); }

 private:
  // The outcome of the one outstanding operation, polling the caller's cancellation meanwhile.
  bool Wait() {
    for (;;) {
      void* tag;
      bool ok = false;
      const auto poll = std::chrono::system_clock::now() + std::chrono::milliseconds(20);
      switch (cq_.AsyncNext(&tag, &ok, poll)) {
        case grpc::CompletionQueue::GOT_EVENT:
          return ok;
        case grpc::CompletionQueue::SHUTDOWN:
          return false;
        case grpc::CompletionQueue::TIMEOUT:
          if (cancelled_ && cancelled_()) ctx_.TryCancel();
          break;
      }
    }
  }

  const std::function<bool()> cancelled_;
  grpc::ClientContext ctx_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::ClientAsyncReader<T>> reader_;
  bool open_ = false;
  bool finished_ = false;
  absl::Status status_;
};

class GrpcImportStream final : public ImportStream {
 public:
  GrpcImportStream(v1::Worker::Stub& stub, absl::Time deadline) {
    SetDeadline(&ctx_, deadline);
    writer_ = stub.ImportSession(&ctx_, &resp_);
  }
  bool Write(const v1::StateChunk& chunk) override { return writer_->Write(chunk); }
  absl::StatusOr<v1::ImportSessionResponse> Finish() override {
    writer_->WritesDone();
    grpc::Status s = writer_->Finish();
    if (!s.ok()) return FromGrpc(s);
    return resp_;
  }
  void Cancel() override { ctx_.TryCancel(); }

 private:
  grpc::ClientContext ctx_;
  v1::ImportSessionResponse resp_;
  std::unique_ptr<grpc::ClientWriter<v1::StateChunk>> writer_;
};

class GrpcWorkerClient final : public WorkerClient {
 public:
  explicit GrpcWorkerClient(std::shared_ptr<grpc::Channel> channel)
      : stub_(v1::Worker::NewStub(std::move(channel))) {}

  absl::StatusOr<v1::SessionInfo> OpenSession(const v1::OpenSessionRequest& req,
                                              absl::Time deadline) override {
    return Unary(&v1::Worker::Stub::OpenSession, req, deadline);
  }
  absl::StatusOr<v1::SessionInfo> DescribeSession(const v1::SessionRef& ref,
                                                  absl::Time deadline) override {
    return Unary(&v1::Worker::Stub::DescribeSession, ref, deadline);
  }
  absl::StatusOr<v1::SessionInfo> CloseSession(const v1::SessionRef& ref,
                                               absl::Time deadline) override {
    return Unary(&v1::Worker::Stub::CloseSession, ref, deadline);
  }
  absl::StatusOr<v1::SessionInfo> UndoTurn(const v1::SessionRef& ref,
                                           absl::Time deadline) override {
    return Unary(&v1::Worker::Stub::UndoTurn, ref, deadline);
  }
  std::unique_ptr<ReadStream<v1::ChatEvent>> Chat(const v1::WorkerChatRequest& req,
                                                  const CallScope& scope) override {
    return std::make_unique<AsyncReadStream<v1::ChatEvent>>(
        scope, [&](grpc::ClientContext* ctx, grpc::CompletionQueue* cq) {
          return stub_->PrepareAsyncChat(ctx, req, cq);
        });
  }
  std::unique_ptr<ReadStream<v1::StateChunk>> ExportSession(const v1::ExportSessionRequest& req,
                                                            absl::Time deadline) override {
    return std::make_unique<AsyncReadStream<v1::StateChunk>>(
        CallScope{deadline, nullptr}, [&](grpc::ClientContext* ctx, grpc::CompletionQueue* cq) {
          return stub_->PrepareAsyncExportSession(ctx, req, cq);
        });
  }
  std::unique_ptr<ImportStream> ImportSession(absl::Time deadline) override {
    return std::make_unique<GrpcImportStream>(*stub_, deadline);
  }
  absl::StatusOr<v1::ImportSessionResponse> SendSession(const v1::SendSessionRequest& req,
                                                        absl::Time deadline) override {
    return Unary(&v1::Worker::Stub::SendSession, req, deadline);
  }
  absl::StatusOr<v1::PromptKeysResponse> PromptKeys(const v1::PromptKeysRequest& req,
                                                    absl::Time deadline) override {
    return Unary(&v1::Worker::Stub::PromptKeys, req, deadline);
  }
  absl::StatusOr<v1::HeldPrefixResponse> HeldPrefix(const v1::HeldPrefixRequest& req,
                                                    absl::Time deadline) override {
    return Unary(&v1::Worker::Stub::HeldPrefix, req, deadline);
  }

 private:
  template <typename Req, typename Resp>
  using Method = grpc::Status (v1::Worker::Stub::*)(grpc::ClientContext*, const Req&, Resp*);
  // One unary call with the deadline; a gRPC error as its absl::Status.
  template <typename Req, typename Resp>
  absl::StatusOr<Resp> Unary(Method<Req, Resp> method, const Req& req, absl::Time deadline) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, deadline);
    Resp out;
    grpc::Status s = ((*stub_).*method)(&ctx, req, &out);
    if (!s.ok()) return FromGrpc(s);
    return out;
  }

  std::unique_ptr<v1::Worker::Stub> stub_;
};

}  // namespace

std::shared_ptr<WorkerClient> GrpcWorkerClients::At(const std::string& address) {
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(address);
  if (it != clients_.end()) return it->second.client;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(max_message_bytes_);
  args.SetMaxSendMessageSize(max_message_bytes_);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      address, credentials_ ? credentials_ : grpc::InsecureChannelCredentials(), args);
  auto client = std::make_shared<GrpcWorkerClient>(channel);
  clients_.emplace(address, Entry{std::move(channel), client});
  return client;
}

// A worker restarted on its address registers again while the router's channel to it may still be
// waiting out its reconnect backoff after the refused connections of the outage (gRPC's backoff
// grows to minutes): without this the next call to it would fail UNAVAILABLE though it is ready.
void GrpcWorkerClients::Reconnect(const std::string& address) {
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(address);
  if (it != clients_.end()) {
    grpc::experimental::ChannelResetConnectionBackoff(it->second.channel.get());
  }
}

}  // namespace rsd::router
