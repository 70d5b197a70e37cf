// The one place a backend is chosen from a device name (`--device` on rsd-run and rsd-worker).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace rsd {

struct BackendOptions {
  // "cpu", "cuda" (device 0), "cuda:N", or "cuda-emu" (the CUDA backend on the emulated device).
  std::string device = "cpu";
  int threads = 1;          // CPU backend
  std::string isa;          // CPU backend: "" = best supported; "scalar", "avx2", "avx512"
  size_t memory_limit = 0;  // bytes of backend memory it may allocate (0: no cap of our own)
};

// INVALID_ARGUMENT for an unknown device name, ISA or thread count; FAILED_PRECONDITION when the
// device is absent (no GPU, a build without CUDA, an ISA this CPU lacks).
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options);

}  // namespace rsd
