// A CPU worker and a CUDA worker in one cluster of real processes (the CUDA worker on cuda-emu,
// the host emulation of a GPU; tools/gpu-check repeats this with a real one). They report their
// devices and share one numerics fingerprint, so a session started on the CPU worker migrates to
// the CUDA worker in the residual form, continues bit for bit (equal to `rsd-run chat`), and
// migrates back in the kv form. A CUDA worker whose device memory cannot hold one request's
// workspace refuses that request with RESOURCE_EXHAUSTED and keeps serving every other session.
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cluster/cluster.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_util.h"

namespace rsd::testing {
namespace {

using ::testing::HasSubstr;

const std::vector<std::string>& Script() {
  static const std::vector<std::string> s = {"hi",   "a cat story", "and then?", "why",
                                             "more", "bye",         "again",     "ok"};
  return s;
}
constexpr int kMaxTokens = 6;

v1::TurnRequest TurnOf(const std::string& session, int t) {
  v1::TurnRequest req;
  req.set_session_id(session);
  req.set_turn_id(absl::StrCat("turn-", t));
  req.set_message(Script()[t]);
  req.set_max_tokens(kMaxTokens);
  req.mutable_sampling()->set_temperature(0.8f);
  req.mutable_sampling()->set_top_k(30);
  req.mutable_sampling()->set_seed(11 + t);
  return req;
}

absl::StatusOr<v1::WorkerInfo> WorkerInfoOf(Cluster& c, const std::string& id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ListWorkersResponse resp;
  grpc::Status st = c.admin().ListWorkers(&ctx, v1::ListWorkersRequest(), &resp);
  if (!st.ok()) return absl::UnavailableError(st.error_message());
  for (const auto& w : resp.workers()) {
    if (w.id() == id) return w;
  }
  return absl::NotFoundError(id);
}

class DeviceCluster : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto* entry = FindSyntheticModel("gqa");
    ASSERT_NE(entry, nullptr);
    SyntheticModelOptions o = entry->options;
    o.weight_dtype = DType::kQ8_0;
    o.name = "gqa-q8";
    SyntheticModel model(o);
    model_ = new std::string(MakeTempDir("rsd-device-cluster") + "/gqa-q8.gguf");
    ASSERT_TRUE(model.WriteGguf(*model_).ok());
    auto ref = RsdRunChat(*model_, Script(), kMaxTokens, 0.8f, 30, 11);
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_ = new std::vector<std::vector<int32_t>>(*ref);
  }
  static std::string* model_;
  static std::vector<std::vector<int32_t>>* ref_;
};

std::string* DeviceCluster::model_ = nullptr;
std::vector<std::vector<int32_t>>* DeviceCluster::ref_ = nullptr;

// The CUDA worker's device: cuda-emu here, a real GPU under tools/gpu-check (RSD_TEST_DEVICE=cuda).
std::string CudaDevice() {
  const char* d = std::getenv("RSD_TEST_DEVICE");
  return d != nullptr && *d != '\0' ? d : "cuda-emu";
}

std::vector<std::string> CudaWorkerFlags() {
  return {"--device", CudaDevice(), "--hot-bytes", "4194304", "--warm-bytes", "4194304"};
}

TEST_F(DeviceCluster, SessionMovesBetweenCpuAndCudaWorkersExactly) {
  auto cluster = Cluster::Start(*model_, {{"cpu", {}}, {"gpu", CudaWorkerFlags()}});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  Cluster& c = **cluster;
  auto cpu = WorkerInfoOf(c, "cpu"), gpu = WorkerInfoOf(c, "gpu");
  ASSERT_TRUE(cpu.ok() && gpu.ok());
  EXPECT_EQ(cpu->device().kind(), "cpu");
  EXPECT_EQ(gpu->device().kind(), CudaDevice() == "cuda-emu" ? "cuda-emu" : "cuda");
  EXPECT_GT(gpu->device().memory_total(), 0);
  EXPECT_EQ(cpu->numerics_fingerprint(), gpu->numerics_fingerprint());

  // Created on the CPU worker (the other is cordoned meanwhile).
  ASSERT_TRUE(c.Cordon("gpu", true).ok());
  auto s = c.Create();
  ASSERT_TRUE(c.Cordon("gpu", false).ok());
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->worker(), "cpu");
  auto turn = [&](int t, const std::string& where) {
    ChatOutcome o = Chat(c.client(), TurnOf(s->session_id(), t));
    ASSERT_TRUE(o.status.ok()) << "turn " << t << ": " << o.status.error_message();
    EXPECT_EQ(o.done.worker(), where) << "turn " << t;
    EXPECT_EQ(o.tokens, (*ref_)[t]) << "turn " << t << " on " << where;
  };
  for (int t = 0; t < 3; ++t) turn(t, "cpu");
  auto to_gpu = c.Migrate(s->session_id(), "gpu", "residual");
  ASSERT_TRUE(to_gpu.ok()) << to_gpu.status();
  EXPECT_GT(to_gpu->payload_bytes(), 0) << "residual checkpoints travelled, not only tokens";
  for (int t = 3; t < 6; ++t) turn(t, "gpu");
  auto to_cpu = c.Migrate(s->session_id(), "cpu", "kv");
  ASSERT_TRUE(to_cpu.ok()) << to_cpu.status();
  EXPECT_GT(to_cpu->payload_bytes(), 0) << "K/V checkpoints travelled, not only tokens";
  for (int t = 6; t < 8; ++t) turn(t, "cpu");
  if (HasFailure()) std::printf("%s\n", c.Logs().c_str());
}

// The CUDA worker gets just enough device memory for its weights, pool and the workspace it
// warmed up with (64 rows); a turn whose prompt needs a bigger workspace is refused with
// RESOURCE_EXHAUSTED and rolled back, while another session's turns go on, before and after.
TEST_F(DeviceCluster, OutOfDeviceMemoryRefusesThatRequestAndTheWorkerKeepsServing) {
  // What the worker holds once started, from its heartbeat.
  int64_t used = 0;
  {
    auto probe = Cluster::Start(*model_, {{"probe", CudaWorkerFlags()}});
    ASSERT_TRUE(probe.ok()) << probe.status();
    auto info = WorkerInfoOf(**probe, "probe");
    ASSERT_TRUE(info.ok());
    used = info->device().memory_used();
    ASSERT_GT(used, 0);
  }
  std::vector<std::string> flags = CudaWorkerFlags();
  flags.push_back("--device-memory");
  flags.push_back(std::to_string(used + 32 * 1024));
  auto cluster = Cluster::Start(*model_, {{"gpu", flags}});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  Cluster& c = **cluster;
  auto small = c.Create(), big = c.Create();
  ASSERT_TRUE(small.ok() && big.ok());
  ChatOutcome o = Chat(c.client(), TurnOf(small->session_id(), 0));
  ASSERT_TRUE(o.status.ok()) << o.status.error_message();
  EXPECT_EQ(o.tokens, (*ref_)[0]);

  // About 200 tokens of prompt: a workspace of 200 rows does not fit.
  v1::TurnRequest long_turn = TurnOf(big->session_id(), 0);
  std::string text;
  for (int i = 0; i < 50; ++i) text += "cats ";
  long_turn.set_message(text);
  ChatOutcome refused = Chat(c.client(), long_turn);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.status.error_message();
  EXPECT_THAT(refused.status.error_message(), HasSubstr("out of device memory"));
  EXPECT_THAT(refused.status.error_message(), HasSubstr("bytes"));

  // The other session goes on exactly; the refused one is still usable with a short turn.
  for (int t = 1; t < 3; ++t) {
    ChatOutcome next = Chat(c.client(), TurnOf(small->session_id(), t));
    ASSERT_TRUE(next.status.ok()) << next.status.error_message();
    EXPECT_EQ(next.tokens, (*ref_)[t]) << "turn " << t;
  }
  ChatOutcome retry = Chat(c.client(), TurnOf(big->session_id(), 0));
  ASSERT_TRUE(retry.status.ok()) << retry.status.error_message();
  EXPECT_EQ(retry.tokens, (*ref_)[0]) << "the refused turn left nothing behind";
  auto status = c.WorkerStatus("gpu");
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(status->serving());
  if (HasFailure()) std::printf("%s\n", c.Logs().c_str());
}

}  // namespace
}  // namespace rsd::testing
