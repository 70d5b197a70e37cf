#include "kernels/cuda/ops.cuh"

namespace rsd::cuda {
namespace {

// One block of 16 threads per row: thread j owns lane j (elements j, j+16, ...) summing squares in
// double, then the CPU's tree fold (lane j += lane j+8, +4, +2, +1) — kernels/cpu/rmsnorm.cc.
__global__ void RmsNormKernel(const float* x, const float* w, float eps, int cols, float* out) {
  __shared__ double lanes[16];
  __shared__ float scale;
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * cols;
  float* o = out + static_cast<int64_t>(blockIdx.x) * cols;
  const int j = threadIdx.x;
  double acc = 0.0;
  for (int i = j; i < cols; i += 16) {
    const double v = static_cast<double>(xr[i]);
    acc = __dadd_rn(acc, __dmul_rn(v, v));
  }
  lanes[j] = acc;
  __syncthreads();
  if (j == 0) {
    for (int width = 8; width >= 1; width /= 2) {
      for (int k = 0; k < width; ++k) lanes[k] = __dadd_rn(lanes[k], lanes[k + width]);
    }
    const float mean = static_cast<float>(__ddiv_rn(lanes[0], static_cast<double>(cols)));
    scale = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
  }
  __syncthreads();
  for (int i = j; i < cols; i += 16) o[i] = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
}

}  // namespace

cudaError_t LaunchRmsNorm(const float* x, const float* w, float eps, int rows, int cols,
                          float* out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RmsNormKernel<<<rows, 16, 0, stream>>>(x, w, eps, cols, out);
  return cudaGetLastError();
}

}  // namespace rsd::cuda
