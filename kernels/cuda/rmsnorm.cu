// RMSNorm: kernels/cpu/rmsnorm.cc's order. One block of 16 threads per row: thread j owns lane j
// (elements j, j+16, ...) summing squares in double, then the CPU's tree fold (lane j += lane j+8,
// +4, +2, +1) by one thread.
#include "kernels/cuda/ops.cuh"

namespace rsd::RSD_CUDA_NS {
namespace {

__global__ void RmsNormKernel(const float* x, const float* w, float eps, int cols, float* out) {
  RSD_SHARED(double, lanes, 16);
  RSD_SHARED(float, scale, 1);
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
    double l[16];
    for (int k = 0; k < 16; ++k) l[k] = lanes[k];
    for (int width = 8; width >= 1; width /= 2) {
      for (int k = 0; k < width; ++k) l[k] = __dadd_rn(l[k], l[k + width]);
    }
    const float mean = static_cast<float>(__ddiv_rn(l[0], static_cast<double>(cols)));
    scale[0] = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
  }
  __syncthreads();
  const float sc = scale[0];
  // Each element is read and written by the same thread, so out may alias x.
  for (int i = j; i < cols; i += 16) o[i] = __fmul_rn(__fmul_rn(xr[i], sc), w[i]);
}

}  // namespace

cudaError_t LaunchRmsNorm(const float* x, const float* w, float eps, int rows, int cols,
                          float* out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RSD_LAUNCH(RmsNormKernel, static_cast<unsigned>(rows), 16, stream, x, w, eps, cols, out);
  return cudaGetLastError();
}

}  // namespace rsd::RSD_CUDA_NS
