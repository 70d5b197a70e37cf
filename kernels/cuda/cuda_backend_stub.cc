// Built when nvcc was not found: the real CUDA backend is absent; cuda-emu still is.
#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_backend.h"

namespace rsd {

bool CudaBackendBuilt() { return false; }

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options) {
  return absl::FailedPreconditionError(absl::StrCat(
      "cannot use cuda:", options.device,
      ": this build has no CUDA backend (nvcc was not found "
      "when it was configured); --device cuda-emu runs the same kernels emulated on the CPU"));
}

}  // namespace rsd
