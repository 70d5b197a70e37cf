// out = x . w^T (+ bias) for Q8_0, Q4_0 and Q4_1 weights against Q8 activation rows: the order of
// kernels/cpu/dot_quant.cc's QuantDot, one warp per output. Thread t = 8k + j takes, for each
// block b = 4g + k of accumulator class k, the four products 4j..4j+3; the eight threads of a
// class sum them exactly (integer shuffles) into the block's P_b, and thread 8k adds
// (dw * da) * P_b into the CPU's acc[k] (and for Q4_1 mw * s_b into off[k]). The classes then pair
// as (acc0 + acc1) + (acc2 + acc3), the offsets the same way, and the offset sum is added last
// for every type, as on the CPU (where it is +0.0 unless Q4_1).
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
  const uint8_t* wr = w + w_row_bytes * o;
  const int8_t* qr = q + r * k;
  const float* dr = d + r * nb;
  const float* sr = s + r * nb;
  // Every thread runs every group so that the shuffles see the whole warp.
  for (int64_t g = 0; g < (nb + 3) / 4; ++g) {
    const int64_t b = 4 * g + cls;
    const bool live = valid && b < nb;
    const uint8_t* blk = wr + b * bb;
    int p = 0;
    if (live) {
      for (int i = 4 * j; i < 4 * j + 4; ++i) p += WeightInt(t, blk + qo, i) * qr[b * 32 + i];
    }
    for (int width = 4; width >= 1; width /= 2) p += __shfl_xor_sync(0xFFFFFFFFu, p, width);
    if (live && j == 0) {
      const float scale = __fmul_rn(half::F16ToF32(LoadU16(blk)), dr[b]);
      acc = __fadd_rn(acc, __fmul_rn(scale, static_cast<float>(p)));
      if (t == DType::kQ4_1) {
        off = __fadd_rn(off, __fmul_rn(half::F16ToF32(LoadU16(blk + 2)), sr[b]));
      }
    }
  }
  // (acc0 + acc1) and (acc2 + acc3) in threads 0 and 16, then their sum in thread 0; the same
  // for the offsets.
  acc = __fadd_rn(acc, __shfl_down_sync(0xFFFFFFFFu, acc, 8));
  off = __fadd_rn(off, __shfl_down_sync(0xFFFFFFFFu, off, 8));
  acc = __fadd_rn(acc, __shfl_down_sync(0xFFFFFFFFu, acc, 16));
  off = __fadd_rn(off, __shfl_down_sync(0xFFFFFFFFu, off, 16));
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
