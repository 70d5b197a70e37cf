#include "kernels/cuda/exp.cuh"
#include "kernels/cuda/ops.cuh"

namespace rsd::cuda {
namespace {

__global__ void SiluMulKernel(const float* g, const float* u, int64_t n, float* o) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    const float s = __fdiv_rn(g[i], __fadd_rn(1.0f, Exp(-g[i])));
    o[i] = __fmul_rn(s, u[i]);
  }
}

__global__ void AddKernel(float* x, const float* y, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = __fadd_rn(x[i], y[i]);
}

__global__ void RopeKernel(float* x, int n_heads, int head_dim, const int32_t* pos,
                           const float* cos_t, const float* sin_t) {
  const int row = blockIdx.x, half = head_dim / 2;
  const float* c = cos_t + static_cast<int64_t>(pos[row]) * half;
  const float* s = sin_t + static_cast<int64_t>(pos[row]) * half;
  for (int t = threadIdx.x; t < n_heads * half; t += blockDim.x) {
    const int h = t / half, i = t % half;
    float* v = x + (static_cast<int64_t>(row) * n_heads + h) * head_dim;
    const float a = v[i], b = v[i + half];
    v[i] = __fsub_rn(__fmul_rn(a, c[i]), __fmul_rn(b, s[i]));
    v[i + half] = __fadd_rn(__fmul_rn(b, c[i]), __fmul_rn(a, s[i]));
  }
}

constexpr int kThreads = 256;

}  // namespace

cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t n, float* out,
                          cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  SiluMulKernel<<<(n + kThreads - 1) / kThreads, kThreads, 0, stream>>>(gate, up, n, out);
  return cudaGetLastError();
}

cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  AddKernel<<<(n + kThreads - 1) / kThreads, kThreads, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t LaunchRope(float* x, int rows, int n_heads, int head_dim, const int32_t* pos,
                       const float* cos_table, const float* sin_table, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RopeKernel<<<rows, 128, 0, stream>>>(x, n_heads, head_dim, pos, cos_table, sin_table);
  return cudaGetLastError();
}

}  // namespace rsd::cuda
