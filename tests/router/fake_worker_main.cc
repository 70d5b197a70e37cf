// rsd-fake-worker: the fake worker of tests/router/fake_worker.h as a process, for trying rsd-router
// and rsdctl by hand without a model. Registers with --router and heartbeats until killed.
//   rsd-fake-worker --router 127.0.0.1:50051 --id w1 [--model fake] [--listen 127.0.0.1:0]
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "grpcpp/grpcpp.h"
#include "rsd/v1/worker.grpc.pb.h"
#include "tests/router/fake_worker_service.h"

namespace v1 = rsd::v1;

int main(int argc, char** argv) {
  std::string router = "127.0.0.1:50051", id = "fake", model = "fake", listen = "127.0.0.1:0";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--router") {
      router = value;
    } else if (flag == "--id") {
      id = value;
    } else if (flag == "--model") {
      model = value;
    } else if (flag == "--listen") {
      listen = value;
    } else {
      std::fprintf(stderr, "rsd-fake-worker: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  rsd::router::testing::FakeWorker worker(id);
  worker.model_fingerprint = "fake-fingerprint";
  rsd::router::testing::FakeWorkerService service(&worker);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "rsd-fake-worker: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  const std::string address = listen.substr(0, listen.rfind(':')) + ":" + std::to_string(port);
  std::printf("rsd-fake-worker %s listening on %s\n", id.c_str(), address.c_str());
  std::fflush(stdout);

  auto stub = v1::Registry::NewStub(grpc::CreateChannel(router, grpc::InsecureChannelCredentials()));
  v1::WorkerStatus status;
  status.set_id(id);
  status.set_address(address);
  status.set_model(model);
  status.set_model_fingerprint("fake-fingerprint");
  status.set_context_length(4096);
  status.set_serving(true);
  status.mutable_load()->set_hot_bytes_total(1 << 20);
  status.mutable_load()->set_hot_bytes_free(1 << 20);
  bool registered = false;
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::Status s;
    if (!registered) {
      v1::RegisterRequest req;
      *req.mutable_status() = status;
      v1::RegisterResponse resp;
      s = stub->Register(&ctx, req, &resp);
      registered = s.ok();
    } else {
      v1::HeartbeatRequest req;
      *req.mutable_status() = status;
      v1::HeartbeatResponse resp;
      s = stub->Heartbeat(&ctx, req, &resp);
      if (s.ok() && resp.reregister()) registered = false;
    }
    if (!s.ok()) std::fprintf(stderr, "rsd-fake-worker: %s\n", s.error_message().c_str());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}
