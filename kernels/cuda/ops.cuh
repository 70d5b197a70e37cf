// CUDA launchers for the elementwise and normalisation ops. Each takes a stream and returns
// cudaError_t; the CUDA backend is the one place a CUDA error becomes a Status (STYLE.md).
// Reduction orders mirror the CPU kernels (16 lanes, element i into lane i % 16, tree fold), and
// nvcc runs with --fmad=false, so these ops give the CPU's bits.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace rsd::cuda {

// out = x / sqrt(mean(x^2) + eps) * w per row. x, out [rows, cols]; w [cols].
cudaError_t LaunchRmsNorm(const float* x, const float* w, float eps, int rows, int cols,
                          float* out, cudaStream_t stream);
// out = silu(gate) * up, n values.
cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t n, float* out,
                          cudaStream_t stream);
// x += y, n values.
cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream);
// Rotate-half RoPE in place on x [rows, n_heads * head_dim] at positions pos[rows], from a
// cos/sin table [max_pos, head_dim / 2].
cudaError_t LaunchRope(float* x, int rows, int n_heads, int head_dim, const int32_t* pos,
                       const float* cos_table, const float* sin_table, cudaStream_t stream);

}  // namespace rsd::cuda
