// FakeWorker (fake_worker.h) served over gRPC: the router's service tests and rsd-fake-worker.
#pragma once

#include "grpcpp/grpcpp.h"
#include "proto/grpc_status.h"
#include "rsd/v1/worker.grpc.pb.h"
#include "tests/router/fake_worker.h"

namespace rsd::router::testing {

// FakeWorker served over gRPC.
class FakeWorkerService final : public v1::Worker::Service {
 public:
  explicit FakeWorkerService(FakeWorker* worker) : w_(*worker) {}
  grpc::Status OpenSession(grpc::ServerContext*, const v1::OpenSessionRequest* req,
                           v1::SessionInfo* resp) override {
    return ToGrpc(w_.OpenSession(req, resp));
  }
  grpc::Status Chat(grpc::ServerContext* ctx, const v1::WorkerChatRequest* req,
                    grpc::ServerWriter<v1::ChatEvent>* writer) override {
    return ToGrpc(w_.Chat(
        req, [ctx] { return ctx->IsCancelled(); },
        [writer](const v1::ChatEvent& ev) { return writer->Write(ev); }));
  }
  grpc::Status DescribeSession(grpc::ServerContext*, const v1::SessionRef* ref,
                               v1::SessionInfo* resp) override {
    return ToGrpc(w_.DescribeSession(ref, resp));
  }
  grpc::Status CloseSession(grpc::ServerContext*, const v1::SessionRef* ref,
                            v1::SessionInfo* resp) override {
    return ToGrpc(w_.CloseSession(ref, resp));
  }
  grpc::Status UndoTurn(grpc::ServerContext*, const v1::SessionRef* ref,
                        v1::SessionInfo* resp) override {
    return ToGrpc(w_.UndoTurn(ref, resp));
  }
  grpc::Status ExportSession(grpc::ServerContext*, const v1::ExportSessionRequest* req,
                             grpc::ServerWriter<v1::StateChunk>* writer) override {
    return ToGrpc(
        w_.ExportSession(req, [writer](const v1::StateChunk& c) { return writer->Write(c); }));
  }
  grpc::Status ImportSession(grpc::ServerContext*, grpc::ServerReader<v1::StateChunk>* reader,
                             v1::ImportSessionResponse* resp) override {
    return ToGrpc(w_.ImportSession([reader](v1::StateChunk* c) { return reader->Read(c); }, resp));
  }

 private:
  FakeWorker& w_;
};

}  // namespace rsd::router::testing
