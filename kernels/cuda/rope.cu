// Rotate-half RoPE: kernels/cpu/rope.cc's products and sums per pair.
#include "kernels/cuda/ops.cuh"

namespace rsd::RSD_CUDA_NS {
namespace {

__global__ void RopeKernel(float* x, int n_heads, int head_dim, const int32_t* pos,
                           const float* cos_t, const float* sin_t) {
  const int64_t row = blockIdx.x;
  const int half = head_dim / 2;
  const float* c = cos_t + static_cast<int64_t>(pos[row]) * half;
  const float* s = sin_t + static_cast<int64_t>(pos[row]) * half;
  for (int t = threadIdx.x; t < n_heads * half; t += blockDim.x) {
    const int h = t / half, i = t % half;
    float* v = x + (row * n_heads + h) * head_dim;
    const float a = v[i], b = v[i + half];
    v[i] = __fsub_rn(__fmul_rn(a, c[i]), __fmul_rn(b, s[i]));
    v[i + half] = __fadd_rn(__fmul_rn(b, c[i]), __fmul_rn(a, s[i]));
  }
}

}  // namespace

cudaError_t LaunchRope(float* x, int rows, int n_heads, int head_dim, const int32_t* pos,
                       const float* cos_table, const float* sin_table, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RSD_LAUNCH(RopeKernel, static_cast<unsigned>(rows), 128, stream, x, n_heads, head_dim, pos,
             cos_table, sin_table);
  return cudaGetLastError();
}

}  // namespace rsd::RSD_CUDA_NS
