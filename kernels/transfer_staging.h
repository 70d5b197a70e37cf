// A ring of host memory from Backend::AllocHost (pinned on CUDA) through which the engine moves
// checkpoint bytes on the backend's transfer stream (Backend::CopyToDeviceAsync/CopyToHostAsync),
// so spills and restores overlap with compute. When the ring is full it waits for the transfers in
// flight and starts over. Not thread-safe: the compute thread owns it.
#pragma once

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace rsd {

class TransferStaging {
 public:
  // RESOURCE_EXHAUSTED if the backend cannot give `bytes` of host memory.
  static absl::StatusOr<std::unique_ptr<TransferStaging>> Create(Backend* backend, size_t bytes);
  ~TransferStaging();
  TransferStaging(const TransferStaging&) = delete;
  TransferStaging& operator=(const TransferStaging&) = delete;

  // Copies `n` host bytes into the ring and queues them to backend memory `dst`. Compute sees them
  // after the backend's next FenceTransfers().
  absl::Status ToDevice(DevicePtr<void> dst, const void* src, size_t n);
  // Ring space for `n` bytes to receive into with CopyToHostAsync; read it after WaitTransfers().
  // INVALID_ARGUMENT if `n` exceeds the ring.
  absl::StatusOr<void*> Reserve(size_t n);
  size_t capacity() const { return bytes_; }

 private:
  TransferStaging(Backend* backend, void* base, size_t bytes)
      : backend_(backend), base_(static_cast<uint8_t*>(base)), bytes_(bytes) {}
  Backend* backend_;
  uint8_t* base_;
  size_t bytes_;
  size_t used_ = 0;  // bytes handed out since the ring last drained
};

}  // namespace rsd
