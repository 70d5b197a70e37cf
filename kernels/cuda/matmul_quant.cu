// out = x . w^T (+ bias) for Q8_0, Q4_0 and Q4_1 weights against Q8 activation rows: the order of
// kernels/cpu/dot_quant.cc's QuantDot, one warp per output. Thread t = 8k + j owns accumulator
// class k (blocks b = k, k+4, ...) and lane j (the four products 4j..4j+3 of each block): the
// CPU's acc[b % 4][j]. The classes then pair as (acc0 + acc1) + (acc2 + acc3) and the eight lanes
// fold as the tree j += j+4, +2, +1, through shuffles; Q4_1's offset terms follow the same
// pairing; the offset sum is added last for every type, as on the CPU (where it is +0.0 unless
// Q4_1).
#include "kernels/cuda/ops.cuh"
#include "kernels/half.h"

namespace rsd::RSD_CUDA_NS {
namespace {

constexpr int kThreads = 128;  // four warps: four outputs per block

__device__ __forceinline__ uint16_t LoadU16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

// The integer weight of value i (0..31) of a block's payload.
__device__ __forceinline__ int WeightInt(DType t, const uint8_t* qs, int i) {
  if (t == DType::kQ8_0) return static_cast<int8_t>(qs[i]);
  const int nib = i < 16 ? (qs[i] & 0x0F) : (qs[i - 16] >> 4);
  return t == DType::kQ4_0 ? nib - 8 : nib;
}

__global__ void MatMulQuantKernel(DType t, const int8_t* q, const float* d, const float* s,
                                  int64_t n, int64_t k, const uint8_t* w, size_t w_row_bytes,
                                  int64_t m, const float* bias, float* out) {
  const int64_t idx = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int t32 = threadIdx.x % 32, cls = t32 / 8, j = t32 % 8;
  const bool valid = idx < n * m;
  const int64_t o = valid ? idx / n : 0, r = valid ? idx % n : 0;
  const int64_t nb = k / 32;
  const size_t bb = DTypeBlockBytes(t);
  const int qo = t == DType::kQ4_1 ? 4 : 2;
  float acc = 0.0f, off = 0.0f;
  if (valid) {
    const uint8_t* wr = w + w_row_bytes * o;
    const int8_t* qr = q + r * k;
    const float* dr = d + r * nb;
    const float* sr = s + r * nb;
    for (int64_t b = cls; b < nb; b += 4) {
      const uint8_t* blk = wr + b * bb;
      const float scale = __fmul_rn(half::F16ToF32(LoadU16(blk)), dr[b]);
      int p = 0;
      for (int i = 4 * j; i < 4 * j + 4; ++i) p += WeightInt(t, blk + qo, i) * qr[b * 32 + i];
      acc = __fadd_rn(acc, __fmul_rn(scale, static_cast<float>(p)));
      if (t == DType::kQ4_1 && j == 0) {
        off = __fadd_rn(off, __fmul_rn(half::F16ToF32(LoadU16(blk + 2)), sr[b]));
      }
    }
  }
  // (acc0 + acc1) and (acc2 + acc3), then their sum, for lane j in thread j; the same for the
  // offsets of threads 0, 8, 16, 24.
  acc = __fadd_rn(acc, __shfl_down_sync(0xFFFFFFFFu, acc, 8));
  off = __fadd_rn(off, __shfl_down_sync(0xFFFFFFFFu, off, 8));
  acc = __fadd_rn(acc, __shfl_down_sync(0xFFFFFFFFu, acc, 16));
  off = __fadd_rn(off, __shfl_down_sync(0xFFFFFFFFu, off, 16));
  for (int width = 4; width >= 1; width /= 2) {
    acc = __fadd_rn(acc, __shfl_down_sync(0xFFFFFFFFu, acc, width));
  }
  if (valid && t32 == 0) {
    float v = __fadd_rn(acc, off);
    if (bias != nullptr) v = __fadd_rn(v, bias[o]);
    out[r * m + o] = v;
  }
}

}  // namespace

cudaError_t LaunchMatMulQuant(DType wtype, const int8_t* q, const float* d, const float* s,
                              int64_t n, int64_t k, const uint8_t* w, int64_t m, const float* bias,
                              float* out, cudaStream_t stream) {
  if ((wtype != DType::kQ8_0 && wtype != DType::kQ4_0 && wtype != DType::kQ4_1) || k % 32 != 0) {
    return cudaErrorInvalidValue;
  }
  if (n == 0 || m == 0) return cudaSuccess;
  const int64_t threads = n * m * 32;
  const unsigned grid = static_cast<unsigned>((threads + kThreads - 1) / kThreads);
  RSD_LAUNCH(MatMulQuantKernel, grid, kThreads, stream, wtype, q, d, s, n, k, w,
             DTypeRowBytes(wtype, k), m, bias, out);
  return cudaGetLastError();
}

}  // namespace rsd::RSD_CUDA_NS
