#include "kernels/backend_factory.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace rsd {

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& o) {
  if (o.device == "cpu") {
    if (o.threads < 1 || o.threads > 256) {
      return absl::InvalidArgumentError(
          absl::StrCat("threads must be in [1, 256], got ", o.threads));
    }
    cpu::Isa isa = cpu::DefaultIsa();
    if (!o.isa.empty()) {
      if (!cpu::ParseIsa(o.isa.c_str(), &isa)) {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown ISA path '", o.isa, "' (scalar, avx2, avx512, avx512vnni, amx)"));
      }
      if (!cpu::IsaSupported(isa)) {
        return absl::FailedPreconditionError(
            absl::StrCat("this CPU does not support the ", o.isa, " path"));
      }
    }
    return std::unique_ptr<Backend>(new cpu::CpuBackend(o.threads, isa, o.memory_limit));
  }
  CudaBackendOptions c;
  c.memory_limit = o.memory_limit;
  if (o.device == "cuda-emu") return CreateCudaEmuBackend(c);
  if (o.device == "cuda") return CreateCudaBackend(c);
  if (absl::StartsWith(o.device, "cuda:")) {
    if (!absl::SimpleAtoi(o.device.substr(5), &c.device) || c.device < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad CUDA device ordinal in '", o.device, "'"));
    }
    return CreateCudaBackend(c);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device '", o.device, "' (cpu, cuda, cuda:N, cuda-emu)"));
}

}  // namespace rsd
