#include "kernels/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/packed_weights.h"

namespace rsd::cpu {

// The AMX path needs the kernel's permission for tile data, which IsaSupported asks for; where it
// is refused the backend runs the VNNI path (the same bits).
CpuBackend::CpuBackend(int threads, Isa isa, size_t memory_limit)
    : pool_(threads),
      isa_(isa == Isa::kAmx && !IsaSupported(Isa::kAmx) ? Isa::kAvx512Vnni : isa),
      ledger_(memory_limit) {}
CpuBackend::~CpuBackend() = default;

std::string CpuBackend::name() const { return std::string("cpu/") + IsaName(isa_); }

std::string CpuBackend::numerics_id() const {
#if RSD_RELAXED_NUMERICS
  // A relaxed build (exactness_cost.py's measurement) must never share state with exact ones.
  return "cpu-k" + std::to_string(kCpuKernelVersion) + "-relaxed";
#else
  return "cpu-k" + std::to_string(kCpuKernelVersion);
#endif
}

DeviceInfo CpuBackend::device_info() const {
  DeviceInfo d;
  d.kind = "cpu";
  d.name = absl::StrCat(IsaName(isa_), ", ", pool_.size(), " threads");
  d.memory_limit = ledger_.limit();
  d.memory_used = ledger_.used();
  return d;
}

absl::StatusOr<DevicePtr<void>> CpuBackend::Alloc(size_t bytes, std::string_view what) {
  const size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  if (absl::Status st = ledger_.Admit(rounded, what, "host"); !st.ok()) return st;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of host memory allocating ", std::string(what), " (", bytes, " bytes)"));
  }
  ledger_.Add(p, rounded);
  return DevicePtr<void>(p);
}
void CpuBackend::Free(DevicePtr<void> p) {
  ledger_.Remove(p.get());
  std::free(p.get());
}
absl::StatusOr<void*> CpuBackend::AllocHost(size_t bytes, std::string_view what) {
  void* p = std::aligned_alloc(64, bytes == 0 ? 64 : (bytes + 63) / 64 * 64);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of host memory allocating ", std::string(what), " (", bytes, " bytes)"));
  }
  return p;
}
void CpuBackend::FreeHost(void* p) { std::free(p); }

// Host memory is the CPU backend's device memory: its copies are plain memory copies.
absl::Status CpuBackend::CopyToDevice(DevicePtr<void> dst, const void* src, size_t n) {
  std::memcpy(dst.get(), src, n);
  return absl::OkStatus();
}
absl::Status CpuBackend::UploadWeight(const void* src, Tensor* w) {
  if (isa_ < Isa::kAvx512Vnni || !Packable(w->dtype, w->rows)) {
    return CopyToDevice(w->device(), src, w->bytes());
  }
  PackWeights(w->dtype, static_cast<const uint8_t*>(src), w->rows, w->cols,
              static_cast<uint8_t*>(w->data));
  w->layout = WeightLayout::kPacked16;
  return absl::OkStatus();
}
absl::Status CpuBackend::CopyToHost(void* dst, DevicePtr<const void> src, size_t n) {
  std::memcpy(dst, src.get(), n);
  return absl::OkStatus();
}
absl::Status CpuBackend::CopyOnDevice(DevicePtr<void> dst, DevicePtr<const void> src, size_t n) {
  std::memmove(dst.get(), src.get(), n);
  return absl::OkStatus();
}
absl::Status CpuBackend::Fill(DevicePtr<void> dst, uint8_t byte, size_t n) {
  std::memset(dst.get(), byte, n);
  return absl::OkStatus();
}

#define RSD_CPU_OP(call)                     \
  do {                                       \
    OpContext ctx{&pool_, isa_, &counters_}; \
    call;                                    \
    return absl::OkStatus();                 \
  } while (0)

absl::Status CpuBackend::Embed(const Tensor& table, const int32_t* ids, Tensor out) {
  RSD_CPU_OP(EmbedOp(ctx, table, ids, out));
}
absl::Status CpuBackend::RmsNorm(const Tensor& x, const float* w, float eps, Tensor out) {
  RSD_CPU_OP(RmsNormOp(ctx, x, w, eps, out));
}
absl::Status CpuBackend::MatMul(const Tensor& x, const Tensor& w, const float* bias, Tensor out) {
  RSD_CPU_OP(MatMulOp(ctx, x, w, bias, out));
}
absl::Status CpuBackend::MatMulShared(const Tensor& x, std::span<const MatMulTarget> targets) {
  RSD_CPU_OP(MatMulSharedOp(ctx, x, targets));
}
absl::Status CpuBackend::Rope(Tensor x, int n_heads, int head_dim, const int32_t* pos,
                              const RopeTable& table) {
  RSD_CPU_OP(RopeOp(ctx, x, n_heads, head_dim, pos, table));
}
absl::Status CpuBackend::StoreKv(const Tensor& k, const Tensor& v, int layer,
                                 const int32_t* slot_block, const int32_t* slot_offset,
                                 const KvPoolView& pool) {
  RSD_CPU_OP(StoreKvOp(ctx, k, v, layer, slot_block, slot_offset, pool));
}
absl::Status CpuBackend::Attention(const Tensor& q, const AttentionRow* rows, int layer,
                                   const AttentionShape& shape, const KvPoolView& pool,
                                   Tensor out) {
  RSD_CPU_OP(AttentionOp(ctx, q, rows, layer, shape, pool, out));
}
absl::Status CpuBackend::AttentionBegin(const AttentionShape& shape, int64_t n_rows,
                                        AttentionState state) {
  RSD_CPU_OP(AttentionBeginOp(ctx, shape, n_rows, state));
}
absl::Status CpuBackend::AttentionChunks(const Tensor& q, const AttentionRow* rows, int layer,
                                         int chunk_begin, int chunk_end,
                                         const AttentionShape& shape, const KvPoolView& pool,
                                         AttentionState state) {
  RSD_CPU_OP(AttentionChunksOp(ctx, q, rows, layer, chunk_begin, chunk_end, shape, pool, state));
}
absl::Status CpuBackend::AttentionFinish(const AttentionShape& shape, int64_t n_rows,
                                         AttentionState state, Tensor out) {
  RSD_CPU_OP(AttentionFinishOp(ctx, shape, n_rows, state, out));
}
absl::Status CpuBackend::SiluMul(const Tensor& gate, const Tensor& up, Tensor out) {
  RSD_CPU_OP(SiluMulOp(ctx, gate, up, out));
}
absl::Status CpuBackend::Add(Tensor x, const Tensor& y) { RSD_CPU_OP(AddOp(ctx, x, y)); }

#undef RSD_CPU_OP

}  // namespace rsd::cpu
