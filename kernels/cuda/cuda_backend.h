// The CUDA backend: weights, the hot K/V pool and every activation in device memory, the ops as
// the kernels of kernels/cuda on one stream. It performs the CPU backend's arithmetic in the CPU
// backend's order, so it gives the CPU backend's bits and shares its numerics fingerprint
// (DESIGN.md section 2): sessions move between CPU and CUDA workers exactly.
//
// The same source builds twice: against the CUDA runtime (when nvcc is present at build time) and
// against cuda-emu, the host emulation of the runtime (kernels/cuda/emu), which is always built so
// that every CI run executes the CUDA kernels without a GPU. This header needs neither.
#pragma once

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace rsd {

struct CudaBackendOptions {
  int device = 0;           // CUDA device ordinal
  size_t memory_limit = 0;  // device bytes the backend may allocate (0: all the device has)
};

// Whether this build has the real CUDA backend (nvcc was found when it was configured).
bool CudaBackendBuilt();
// The CUDA backend on GPU `options.device`. FAILED_PRECONDITION when the build has no CUDA or no
// device is present, INVALID_ARGUMENT for an ordinal out of range.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options);
// The same backend over the emulated device (kernels/cuda/emu/runtime.h).
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaEmuBackend(const CudaBackendOptions& options);

}  // namespace rsd
