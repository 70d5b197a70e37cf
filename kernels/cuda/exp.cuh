// The CPU's Exp (kernels/cpu/exp.h) for the device: the same operations in the same order, so
// with --fmad=false both give the same bits.
#pragma once

#include "kernels/cuda/compat.cuh"

namespace rsd::RSD_CUDA_NS {

__device__ __forceinline__ float Exp(float x) {
  if (!(x >= -87.3f)) return x != x ? x : 0.0f;
  if (x > 88.0f) return __int_as_float(0x7F800000);
  const float n = rintf(__fmul_rn(x, 1.44269504088896341f));
  const float r = __fsub_rn(__fsub_rn(x, __fmul_rn(n, 0.693145751953125f)),
                            __fmul_rn(n, 1.428606765330187e-06f));
  float p = 1.0f / 5040.0f;
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 720.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 120.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 24.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 6.0f);
  p = __fadd_rn(__fmul_rn(p, r), 0.5f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f);
  return __fmul_rn(p, __int_as_float((static_cast<int>(n) + 127) << 23));
}

// -infinity, spelled so host and device compilers agree.
__device__ __forceinline__ float NegInf() { return __int_as_float(static_cast<int>(0xFF800000u)); }

}  // namespace rsd::RSD_CUDA_NS
