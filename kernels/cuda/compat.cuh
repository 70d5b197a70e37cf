// What every CUDA source of ours includes first. The same .cu files build two ways:
//  - with nvcc, against the CUDA runtime, into namespace rsd::cuda;
//  - as host C++ with RSD_CUDA_EMU defined, against our emulation runtime (emu/runtime.h), into
//    namespace rsd::cuda_emu, so CI runs them without a GPU (DESIGN.md section 2).
// Kernels therefore launch with RSD_LAUNCH instead of <<<...>>> and declare shared memory with
// RSD_SHARED (the emulator checks its bounds and races). Device code uses only IEEE operations
// that round the same on the host (nvcc runs with --fmad=false; the host build never contracts).
#pragma once

#include <cstdint>

#if defined(RSD_CUDA_EMU)

#include "kernels/cuda/emu/runtime.h"
#define RSD_CUDA_NS cuda_emu
namespace rsd::cuda_emu {
using namespace ::rsd::emu;  // NOLINT: the emulated runtime stands in for the global CUDA API
}  // namespace rsd::cuda_emu
#define RSD_LAUNCH(kernel, grid, block, stream, ...) \
  ::rsd::emu::Launch(#kernel, kernel, grid, block, 0, stream, __VA_ARGS__)
#define RSD_SHARED(T, name, n)                                                            \
  static const ::rsd::emu::detail::SharedSite rsd_site_##name{#name, __FILE__, __LINE__}; \
  ::rsd::emu::SharedArray<T> name(&rsd_site_##name, n)

#else

#include <cuda_runtime.h>
#define RSD_CUDA_NS cuda
#define RSD_LAUNCH(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#define RSD_SHARED(T, name, n) __shared__ T name[n]

#endif
