#include "kernels/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>

#include "kernels/cpu/ops.h"

namespace rsd::cpu {

CpuBackend::CpuBackend(int threads, Isa isa) : pool_(threads), isa_(isa) {}
CpuBackend::~CpuBackend() = default;

std::string CpuBackend::name() const { return std::string("cpu/") + IsaName(isa_); }

std::string CpuBackend::numerics_id() const {
  return "cpu-k" + std::to_string(kCpuKernelVersion);
}

void* CpuBackend::Alloc(size_t bytes) {
  const size_t rounded = (bytes + 63) / 64 * 64;
  return std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
}
void CpuBackend::Free(void* p) { std::free(p); }
void CpuBackend::CopyToDevice(void* dst, const void* src, size_t n) { std::memcpy(dst, src, n); }
void CpuBackend::CopyToHost(void* dst, const void* src, size_t n) { std::memcpy(dst, src, n); }
void CpuBackend::CopyOnDevice(void* dst, const void* src, size_t n) { std::memmove(dst, src, n); }
void CpuBackend::Fill(void* dst, uint8_t byte, size_t n) { std::memset(dst, byte, n); }

#define RSD_CPU_CTX OpContext ctx{&pool_, isa_, &counters_}

void CpuBackend::Embed(const Tensor& table, const int32_t* ids, Tensor out) {
  RSD_CPU_CTX;
  EmbedOp(ctx, table, ids, out);
}
void CpuBackend::RmsNorm(const Tensor& x, const float* w, float eps, Tensor out) {
  RSD_CPU_CTX;
  RmsNormOp(ctx, x, w, eps, out);
}
void CpuBackend::MatMul(const Tensor& x, const Tensor& w, const float* bias, Tensor out) {
  RSD_CPU_CTX;
  MatMulOp(ctx, x, w, bias, out);
}
void CpuBackend::Rope(Tensor x, int n_heads, int head_dim, const int32_t* pos,
                      const RopeTable& table) {
  RSD_CPU_CTX;
  RopeOp(ctx, x, n_heads, head_dim, pos, table);
}
void CpuBackend::StoreKv(const Tensor& k, const Tensor& v, int layer, const int32_t* slot_block,
                         const int32_t* slot_offset, const KvPoolView& pool) {
  RSD_CPU_CTX;
  StoreKvOp(ctx, k, v, layer, slot_block, slot_offset, pool);
}
void CpuBackend::Attention(const Tensor& q, const AttentionRow* rows, int layer,
                           const AttentionShape& shape, const KvPoolView& pool, Tensor out) {
  RSD_CPU_CTX;
  AttentionOp(ctx, q, rows, layer, shape, pool, out);
}
void CpuBackend::AttentionBegin(const AttentionShape& shape, int64_t n_rows,
                                AttentionState state) {
  RSD_CPU_CTX;
  AttentionBeginOp(ctx, shape, n_rows, state);
}
void CpuBackend::AttentionChunks(const Tensor& q, const AttentionRow* rows, int layer,
                                 int chunk_begin, int chunk_end, const AttentionShape& shape,
                                 const KvPoolView& pool, AttentionState state) {
  RSD_CPU_CTX;
  AttentionChunksOp(ctx, q, rows, layer, chunk_begin, chunk_end, shape, pool, state);
}
void CpuBackend::AttentionFinish(const AttentionShape& shape, int64_t n_rows,
                                 AttentionState state, Tensor out) {
  RSD_CPU_CTX;
  AttentionFinishOp(ctx, shape, n_rows, state, out);
}
void CpuBackend::SiluMul(const Tensor& gate, const Tensor& up, Tensor out) {
  RSD_CPU_CTX;
  SiluMulOp(ctx, gate, up, out);
}
void CpuBackend::Add(Tensor x, const Tensor& y) {
  RSD_CPU_CTX;
  AddOp(ctx, x, y);
}

}  // namespace rsd::cpu
