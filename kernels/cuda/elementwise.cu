// SiLU-mul and add, elementwise: kernels/cpu/elementwise.cc's operations per element.
#include "kernels/cuda/exp.cuh"
#include "kernels/cuda/ops.cuh"

namespace rsd::RSD_CUDA_NS {
namespace {

constexpr int kThreads = 256;

__global__ void SiluMulKernel(const float* g, const float* u, int64_t n, float* o) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    const float x = g[i];
    const float s = __fdiv_rn(x, __fadd_rn(1.0f, Exp(-x)));
    o[i] = __fmul_rn(s, u[i]);
  }
}

__global__ void AddKernel(float* x, const float* y, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = __fadd_rn(x[i], y[i]);
}

}  // namespace

cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t n, float* out,
                          cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  RSD_LAUNCH(SiluMulKernel, grid, kThreads, stream, gate, up, n, out);
  return cudaGetLastError();
}

cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  RSD_LAUNCH(AddKernel, grid, kThreads, stream, x, y, n);
  return cudaGetLastError();
}

}  // namespace rsd::RSD_CUDA_NS
