// CUDA kernels against the CPU backend, bit for bit (both follow one arithmetic; nvcc runs with
// --fmad=false). Runs where a GPU is; elsewhere it says so and skips. Label: gpu.
#include <cuda_runtime.h>

#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/ops.cuh"

namespace rsd {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

std::vector<float> Random(size_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Device copy of `h`, freed by the caller.
float* ToDevice(const std::vector<float>& h) {
  float* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, h.size() * sizeof(float)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  return d;
}

std::vector<float> ToHost(const float* d, size_t n) {
  std::vector<float> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

TEST(CudaParity, RmsNormSiluMulAddRope) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device here: the gpu tests run under tools/gpu-check";
  cpu::CpuBackend cpu(1, cpu::Isa::kScalar);
  const int rows = 37, cols = 576;
  auto x = Random(rows * cols, 3.0f, 1), w = Random(cols, 1.0f, 2);
  std::vector<float> ref(x.size());
  cpu.RmsNorm(Tensor{x.data(), DType::kF32, rows, cols}, w.data(), 1e-5f,
              Tensor{ref.data(), DType::kF32, rows, cols});
  float *dx = ToDevice(x), *dw = ToDevice(w), *dout = ToDevice(std::vector<float>(x.size(), NAN));
  ASSERT_EQ(cuda::LaunchRmsNorm(dx, dw, 1e-5f, rows, cols, dout, nullptr), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(0, std::memcmp(ToHost(dout, x.size()).data(), ref.data(), ref.size() * 4)) << "rmsnorm";

  auto g = Random(rows * cols, 8.0f, 3), u = Random(rows * cols, 2.0f, 4);
  cpu.SiluMul(Tensor{g.data(), DType::kF32, rows, cols}, Tensor{u.data(), DType::kF32, rows, cols},
              Tensor{ref.data(), DType::kF32, rows, cols});
  float *dg = ToDevice(g), *du = ToDevice(u);
  ASSERT_EQ(cuda::LaunchSiluMul(dg, du, g.size(), dout, nullptr), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(0, std::memcmp(ToHost(dout, g.size()).data(), ref.data(), ref.size() * 4)) << "silu";

  std::vector<float> sum = g;
  cpu.Add(Tensor{sum.data(), DType::kF32, rows, cols}, Tensor{u.data(), DType::kF32, rows, cols});
  ASSERT_EQ(cuda::LaunchAdd(dg, du, g.size(), nullptr), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(0, std::memcmp(ToHost(dg, g.size()).data(), sum.data(), sum.size() * 4)) << "add";

  const int heads = 9, hd = 64, max_pos = 64;
  auto cs = Random(max_pos * hd / 2, 1.0f, 5), sn = Random(max_pos * hd / 2, 1.0f, 6);
  auto q = Random(rows * heads * hd, 2.0f, 7);
  std::vector<int32_t> pos(rows);
  for (int r = 0; r < rows; ++r) pos[r] = (r * 7) % max_pos;
  std::vector<float> qref = q;
  cpu.Rope(Tensor{qref.data(), DType::kF32, rows, heads * hd}, heads, hd, pos.data(),
           RopeTable{cs.data(), sn.data(), max_pos, hd / 2});
  float *dq = ToDevice(q), *dcs = ToDevice(cs), *dsn = ToDevice(sn);
  int32_t* dpos = nullptr;
  ASSERT_EQ(cudaMalloc(&dpos, rows * sizeof(int32_t)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dpos, pos.data(), rows * sizeof(int32_t), cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_EQ(cuda::LaunchRope(dq, rows, heads, hd, dpos, dcs, dsn, nullptr), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(0, std::memcmp(ToHost(dq, q.size()).data(), qref.data(), qref.size() * 4)) << "rope";
  for (void* p : {static_cast<void*>(dx), static_cast<void*>(dw), static_cast<void*>(dout),
                  static_cast<void*>(dg), static_cast<void*>(du), static_cast<void*>(dq),
                  static_cast<void*>(dcs), static_cast<void*>(dsn), static_cast<void*>(dpos)}) {
    cudaFree(p);
  }
}

}  // namespace
}  // namespace rsd
