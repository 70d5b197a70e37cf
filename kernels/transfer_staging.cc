#include "kernels/transfer_staging.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace rsd {

absl::StatusOr<std::unique_ptr<TransferStaging>> TransferStaging::Create(Backend* backend,
                                                                         size_t bytes) {
  absl::StatusOr<void*> p = backend->AllocHost(bytes, "transfer staging");
  if (!p.ok()) return p.status();
  return std::unique_ptr<TransferStaging>(new TransferStaging(backend, *p, bytes));
}

TransferStaging::~TransferStaging() {
  (void)backend_->WaitTransfers();  // nothing may still read or write the ring
  backend_->FreeHost(base_);
}

absl::StatusOr<void*> TransferStaging::Reserve(size_t n) {
  if (n > bytes_) {
    return absl::InvalidArgumentError(
        absl::StrCat("a transfer of ", n, " bytes exceeds the staging ring of ", bytes_));
  }
  const size_t at = (used_ + 63) / 64 * 64;
  if (at + n > bytes_) {
    // Full: the transfers in flight must be done with the ring before it is reused.
    if (absl::Status st = backend_->WaitTransfers(); !st.ok()) return st;
    used_ = 0;
    return Reserve(n);
  }
  used_ = at + n;
  return base_ + at;
}

absl::Status TransferStaging::ToDevice(DevicePtr<void> dst, const void* src, size_t n) {
  absl::StatusOr<void*> slot = Reserve(n);
  if (!slot.ok()) return slot.status();
  std::memcpy(*slot, src, n);
  return backend_->CopyToDeviceAsync(dst, *slot, n);
}

}  // namespace rsd
