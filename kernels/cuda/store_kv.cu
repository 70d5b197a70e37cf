// K and V rows into their pool slots (kernels/cpu/elementwise.cc's StoreKvOp), rounded to F16 by
// kernels/half.h's F32ToF16, the CPU's rounding bit for bit.
#include "kernels/cuda/ops.cuh"
#include "kernels/half.h"

namespace rsd::RSD_CUDA_NS {
namespace {

__global__ void StoreKvKernel(const float* k, int64_t k_cols, const float* v, int64_t v_cols,
                              int layer, const int32_t* slot_block, const int32_t* slot_offset,
                              uint16_t* base, int n_layers, int kv_dim, int block_tokens) {
  const int64_t r = blockIdx.x;
  const int64_t block = slot_block[r];
  const int64_t off = static_cast<int64_t>(slot_offset[r]) * kv_dim;
  uint16_t* kd = base + (block * n_layers + layer) * 2 * block_tokens * kv_dim + off;
  uint16_t* vd = kd + static_cast<int64_t>(block_tokens) * kv_dim;
  for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
    kd[i] = half::F32ToF16(k[r * k_cols + i]);
    vd[i] = half::F32ToF16(v[r * v_cols + i]);
  }
}

}  // namespace

cudaError_t LaunchStoreKv(const float* k, int64_t k_cols, const float* v, int64_t v_cols, int64_t n,
                          int layer, const int32_t* slot_block, const int32_t* slot_offset,
                          const KvPoolView& pool, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  RSD_LAUNCH(StoreKvKernel, static_cast<unsigned>(n), 128, stream, k, k_cols, v, v_cols, layer,
             slot_block, slot_offset, pool.base.get(), pool.n_layers, pool.kv_dim,
             pool.block_tokens);
  return cudaGetLastError();
}

}  // namespace rsd::RSD_CUDA_NS
