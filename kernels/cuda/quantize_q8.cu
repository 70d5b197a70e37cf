// Activation rows quantized per 32-value block as kernels/cpu/dot_quant.cc's QuantizeQ8Row: one
// warp per block, lane i holding value i. The block maximum and the integer sum are exact in any
// order; the scale, rounding and clamp are the CPU's operations.
#include "kernels/cuda/ops.cuh"
#include "kernels/half.h"

namespace rsd::RSD_CUDA_NS {
namespace {

constexpr int kThreads = 128;  // four warps: four blocks of 32 values

__global__ void QuantizeQ8Kernel(const float* x, int64_t n_blocks, int8_t* q, float* d,
                                 int32_t* sum, float* s) {
  const int64_t b = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const bool valid = b < n_blocks;
  const float v = valid ? x[b * 32 + lane] : 0.0f;
  const float a = fabsf(v);
  float amax = a;
  for (int off = 16; off >= 1; off /= 2) {
    const float o = __shfl_xor_sync(0xFFFFFFFFu, amax, off);
    amax = o > amax ? o : amax;
  }
  const float id = amax != 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
  float r = rintf(__fmul_rn(v, id));
  r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
  const int qi = static_cast<int>(r);
  int total = qi;
  for (int off = 16; off >= 1; off /= 2) total += __shfl_xor_sync(0xFFFFFFFFu, total, off);
  if (!valid) return;
  q[b * 32 + lane] = static_cast<int8_t>(qi);
  if (lane == 0) {
    const float db = __fdiv_rn(amax, 127.0f);
    d[b] = half::F16ToF32(half::F32ToF16(db));
    sum[b] = total;
    s[b] = half::F16ToF32(half::F32ToF16(__fmul_rn(db, static_cast<float>(total))));
  }
}

}  // namespace

cudaError_t LaunchQuantizeQ8(const float* x, int64_t n, int64_t k, int8_t* q, float* d,
                             int32_t* sum, float* s, cudaStream_t stream) {
  if (k % 32 != 0) return cudaErrorInvalidValue;
  const int64_t blocks = n * (k / 32);
  if (blocks == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>((blocks * 32 + kThreads - 1) / kThreads);
  RSD_LAUNCH(QuantizeQ8Kernel, grid, kThreads, stream, x, blocks, q, d, sum, s);
  return cudaGetLastError();
}

}  // namespace rsd::RSD_CUDA_NS
