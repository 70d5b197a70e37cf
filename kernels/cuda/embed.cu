// Embedding lookup: one table row per output row, dequantized as kernels/cpu/embed.cc's
// DequantizeRow does (the same product, and sum for Q4_1, per value).
#include "kernels/cuda/ops.cuh"
#include "kernels/half.h"

namespace rsd::RSD_CUDA_NS {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ uint16_t LoadU16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

__device__ float Value(DType t, const uint8_t* row, int64_t c) {
  switch (t) {
    case DType::kF32: {
      uint32_t bits = 0;
      for (int b = 0; b < 4; ++b) bits |= static_cast<uint32_t>(row[4 * c + b]) << (8 * b);
      return half::FromBits(bits);
    }
    case DType::kF16:
      return half::F16ToF32(LoadU16(row + 2 * c));
    case DType::kBF16:
      return half::BF16ToF32(LoadU16(row + 2 * c));
    case DType::kQ8_0: {
      const uint8_t* blk = row + (c / 32) * DTypeBlockBytes(t);
      return __fmul_rn(half::F16ToF32(LoadU16(blk)),
                       static_cast<float>(static_cast<int8_t>(blk[2 + c % 32])));
    }
    case DType::kQ4_0: {
      const uint8_t* blk = row + (c / 32) * DTypeBlockBytes(t);
      const int i = static_cast<int>(c % 32);
      const int nib = i < 16 ? (blk[2 + i] & 0x0F) : (blk[2 + i - 16] >> 4);
      return __fmul_rn(half::F16ToF32(LoadU16(blk)), static_cast<float>(nib - 8));
    }
    case DType::kQ4_1: {
      const uint8_t* blk = row + (c / 32) * DTypeBlockBytes(t);
      const int i = static_cast<int>(c % 32);
      const int nib = i < 16 ? (blk[4 + i] & 0x0F) : (blk[4 + i - 16] >> 4);
      return __fadd_rn(__fmul_rn(half::F16ToF32(LoadU16(blk)), static_cast<float>(nib)),
                       half::F16ToF32(LoadU16(blk + 2)));
    }
  }
  return __int_as_float(0x7FC00000);
}

__global__ void EmbedKernel(DType t, const uint8_t* table, int64_t vocab, int64_t cols,
                            int64_t col_blocks, const int32_t* ids, float* out) {
  const int64_t r = blockIdx.x / col_blocks;
  const int64_t c = (blockIdx.x % col_blocks) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const int32_t id = ids[r];
  float v = __int_as_float(0x7FC00000);
  if (id >= 0 && id < vocab) v = Value(t, table + DTypeRowBytes(t, cols) * id, c);
  out[r * cols + c] = v;
}

}  // namespace

cudaError_t LaunchEmbed(DType type, const uint8_t* table, int64_t vocab, int64_t cols,
                        const int32_t* ids, int64_t n, float* out, cudaStream_t stream) {
  if (n == 0 || cols == 0) return cudaSuccess;
  const int64_t col_blocks = (cols + kThreads - 1) / kThreads;
  RSD_LAUNCH(EmbedKernel, static_cast<unsigned>(n * col_blocks), kThreads, stream, type, table,
             vocab, cols, col_blocks, ids, out);
  return cudaGetLastError();
}

}  // namespace rsd::RSD_CUDA_NS
