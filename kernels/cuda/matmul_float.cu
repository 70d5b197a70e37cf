// out = x . w^T (+ bias) for F32, F16 and BF16 weights: kernels/cpu/dot_f32.cc's DotF32 per output.
// A half-warp computes one output: lane j accumulates elements j, j+16, ... in order (a + x*w,
// never fused), then the lanes fold as the CPU's tree (j += j+8, +4, +2, +1) through shuffles.
// F16/BF16 weights are widened exactly, as the CPU's row dequantization does.
#include "kernels/cuda/ops.cuh"
#include "kernels/half.h"

namespace rsd::RSD_CUDA_NS {
namespace {

constexpr int kThreads = 128;  // eight half-warps: eight outputs per block

__device__ __forceinline__ float WeightAt(DType t, const uint8_t* row, int64_t i) {
  if (t == DType::kF32) return reinterpret_cast<const float*>(row)[i];
  const uint16_t h = reinterpret_cast<const uint16_t*>(row)[i];
  return t == DType::kF16 ? half::F16ToF32(h) : half::BF16ToF32(h);
}

__global__ void MatMulFloatKernel(DType t, const float* x, int64_t n, int64_t k, const uint8_t* w,
                                  size_t w_row_bytes, int64_t m, const float* bias, float* out) {
  const int64_t idx = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 16;
  const int lane = threadIdx.x % 16;
  const bool valid = idx < n * m;
  // Consecutive half-warps take consecutive rows of one output feature (weight row reuse).
  const int64_t o = valid ? idx / n : 0, r = valid ? idx % n : 0;
  float acc = 0.0f;
  if (valid) {
    const float* xr = x + r * k;
    const uint8_t* wr = w + w_row_bytes * o;
    for (int64_t i = lane; i < k; i += 16) acc = __fmaf_rn(xr[i], WeightAt(t, wr, i), acc);
  }
  // Every lane of the warp takes part in the shuffles, valid or not.
  for (int width = 8; width >= 1; width /= 2) {
    acc = __fadd_rn(acc, __shfl_down_sync(0xFFFFFFFFu, acc, width, 16));
  }
  if (valid && lane == 0) {
    if (bias != nullptr) acc = __fadd_rn(acc, bias[o]);
    out[r * m + o] = acc;
  }
}

}  // namespace

cudaError_t LaunchMatMulFloat(DType wtype, const float* x, int64_t n, int64_t k, const uint8_t* w,
                              int64_t m, const float* bias, float* out, cudaStream_t stream) {
  if (wtype != DType::kF32 && wtype != DType::kF16 && wtype != DType::kBF16) {
    return cudaErrorInvalidValue;
  }
  if (n == 0 || m == 0) return cudaSuccess;
  const int64_t threads = n * m * 16;
  const unsigned grid = static_cast<unsigned>((threads + kThreads - 1) / kThreads);
  RSD_LAUNCH(MatMulFloatKernel, grid, kThreads, stream, wtype, x, n, k, w, DTypeRowBytes(wtype, k),
             m, bias, out);
  return cudaGetLastError();
}

}  // namespace rsd::RSD_CUDA_NS
