// The CUDA backend class: the one place a CUDA error becomes a Status (STYLE.md). Compiled twice,
// as rsd::cuda (real runtime) and rsd::cuda_emu (emulated runtime); see cuda_backend.h.
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/compat.cuh"
#include "kernels/cuda/ops.cuh"
#include "kernels/memory_ledger.h"
#include "storage/common/status.h"

// Returns a CUDA call's failure as a Status (Check names the call).
#define RSD_CUDA_TRY(what, expr)                                                   \
  do {                                                                             \
    if (absl::Status rsd_st_ = Check(what, (expr)); !rsd_st_.ok()) return rsd_st_; \
  } while (0)

namespace rsd::RSD_CUDA_NS {
namespace {

#if defined(RSD_CUDA_EMU)
constexpr const char* kKind = "cuda-emu";
#else
constexpr const char* kKind = "cuda";
#endif

// Partials of one attention slice: bounds the scratch however long the context.
constexpr size_t kPartialBudgetFloats = size_t{8} << 20;  // 32 MiB

bool IsQuantized(DType t) { return t == DType::kQ8_0 || t == DType::kQ4_0 || t == DType::kQ4_1; }

std::string CudaText(cudaError_t e) {
  return absl::StrCat(cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}

// A device buffer that grows on demand (scratch for one op at a time).
struct Scratch {
  void* p = nullptr;
  size_t bytes = 0;
};

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<Backend>> Create(const CudaBackendOptions& o) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
      cudaGetLastError();
      return absl::FailedPreconditionError(absl::StrCat(
          "no CUDA device: ", e == cudaSuccess ? "the runtime found none" : CudaText(e)));
    }
    if (o.device < 0 || o.device >= count) {
      return absl::InvalidArgumentError(
          absl::StrCat("CUDA device ", o.device, " does not exist (", count, " present)"));
    }
    std::unique_ptr<CudaBackend> b(new CudaBackend(o));
    if (absl::Status st = b->Init(); !st.ok()) return st;
    return std::unique_ptr<Backend>(std::move(b));
  }

  ~CudaBackend() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    for (Scratch* s : {&quant_, &partials_, &state_}) FreeScratch(s);
    if (chunk_count_ != nullptr) cudaFree(chunk_count_);
    if (transfer_ != nullptr) cudaStreamSynchronize(transfer_);
    for (cudaEvent_t e : {compute_done_, transfers_done_}) {
      if (e != nullptr) cudaEventDestroy(e);
    }
    if (transfer_ != nullptr) cudaStreamDestroy(transfer_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override {
    return absl::StrCat(kKind, ":", device_, " (", props_.name, ")");
  }
  // The CPU backend's arithmetic in the CPU backend's order: one numerics id for both.
  std::string numerics_id() const override {
    return "cpu-k" + std::to_string(cpu::kCpuKernelVersion);
  }
  int threads() const override { return 1; }

  DeviceInfo device_info() const override {
    DeviceInfo d;
    d.kind = kKind;
    d.name = props_.name;
    d.index = device_;
    d.memory_total = props_.totalGlobalMem;
    d.memory_limit = ledger_.limit();
    d.memory_used = ledger_.used();
    d.memory_bandwidth = bandwidth_;
    return d;
  }

  absl::StatusOr<DevicePtr<void>> Alloc(size_t bytes, std::string_view what) override {
    const size_t n = std::max<size_t>(bytes, 256);
    if (absl::Status st = ledger_.Admit(n, what, "device"); !st.ok()) return st;
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, n);
    if (e != cudaSuccess) {
      cudaGetLastError();  // an allocation failure is not sticky
      return absl::ResourceExhaustedError(absl::StrCat("out of device memory on ", name(),
                                                       " allocating ", std::string(what), " (",
                                                       bytes, " bytes): ", CudaText(e)));
    }
    ledger_.Add(p, n);
    return DevicePtr<void>(p);
  }
  void Free(DevicePtr<void> p) override {
    if (!p) return;
    ledger_.Remove(p.get());
    cudaFree(p.get());
  }
  absl::StatusOr<void*> AllocHost(size_t bytes, std::string_view what) override {
    void* p = nullptr;
    const cudaError_t e = cudaHostAlloc(&p, std::max<size_t>(bytes, 64), cudaHostAllocDefault);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes,
                                                       " bytes of pinned host memory for ",
                                                       std::string(what), ": ", CudaText(e)));
    }
    return p;
  }
  void FreeHost(void* p) override {
    if (p != nullptr) cudaFreeHost(p);
  }

  absl::Status CopyToDevice(DevicePtr<void> dst, const void* src, size_t n) override {
    return Check("copy to device",
                 cudaMemcpyAsync(dst.get(), src, n, cudaMemcpyHostToDevice, stream_));
  }
  absl::Status CopyToHost(void* dst, DevicePtr<const void> src, size_t n) override {
    RSD_CUDA_TRY("copy to host",
                 cudaMemcpyAsync(dst, src.get(), n, cudaMemcpyDeviceToHost, stream_));
    return Synchronize();
  }
  absl::Status CopyOnDevice(DevicePtr<void> dst, DevicePtr<const void> src, size_t n) override {
    return Check("copy on device",
                 cudaMemcpyAsync(dst.get(), src.get(), n, cudaMemcpyDeviceToDevice, stream_));
  }
  absl::Status Fill(DevicePtr<void> dst, uint8_t byte, size_t n) override {
    return Check("fill", cudaMemsetAsync(dst.get(), byte, n, stream_));
  }
  absl::Status Synchronize() override {
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) {
      return absl::InternalError(absl::StrCat("CUDA fault in work queued up to ", last_op_, " on ",
                                              name(), ": ", CudaText(e)));
    }
    return absl::OkStatus();
  }

  absl::Status CopyToHostAsync(void* dst, DevicePtr<const void> src, size_t n) override {
    // After everything computed so far: the transfer stream waits for the compute stream.
    RSD_CUDA_TRY("record compute", cudaEventRecord(compute_done_, stream_));
    RSD_CUDA_TRY("order transfer", cudaStreamWaitEvent(transfer_, compute_done_, 0));
    return Check("transfer to host",
                 cudaMemcpyAsync(dst, src.get(), n, cudaMemcpyDeviceToHost, transfer_));
  }
  absl::Status CopyToDeviceAsync(DevicePtr<void> dst, const void* src, size_t n) override {
    // Not before compute queued earlier is done with what it may overwrite.
    RSD_CUDA_TRY("record compute", cudaEventRecord(compute_done_, stream_));
    RSD_CUDA_TRY("order transfer", cudaStreamWaitEvent(transfer_, compute_done_, 0));
    return Check("transfer to device",
                 cudaMemcpyAsync(dst.get(), src, n, cudaMemcpyHostToDevice, transfer_));
  }
  absl::Status FenceTransfers() override {
    RSD_CUDA_TRY("record transfers", cudaEventRecord(transfers_done_, transfer_));
    return Check("fence transfers", cudaStreamWaitEvent(stream_, transfers_done_, 0));
  }
  absl::Status WaitTransfers() override {
    const cudaError_t e = cudaStreamSynchronize(transfer_);
    if (e != cudaSuccess) {
      return absl::InternalError(
          absl::StrCat("CUDA fault in a transfer on ", name(), ": ", CudaText(e)));
    }
    return absl::OkStatus();
  }

  absl::Status Embed(const Tensor& table, const int32_t* ids, Tensor out) override {
    return Launched("embed",
                    LaunchEmbed(table.dtype, static_cast<const uint8_t*>(table.data), table.rows,
                                table.cols, ids, out.rows, out.f32(), stream_));
  }
  absl::Status RmsNorm(const Tensor& x, const float* w, float eps, Tensor out) override {
    return Launched("rmsnorm", LaunchRmsNorm(x.f32(), w, eps, static_cast<int>(x.rows),
                                             static_cast<int>(x.cols), out.f32(), stream_));
  }
  absl::Status MatMul(const Tensor& x, const Tensor& w, const float* bias, Tensor out) override;
  absl::Status Rope(Tensor x, int n_heads, int head_dim, const int32_t* pos,
                    const RopeTable& table) override {
    return Launched("rope", LaunchRope(x.f32(), static_cast<int>(x.rows), n_heads, head_dim, pos,
                                       table.cos, table.sin, stream_));
  }
  absl::Status StoreKv(const Tensor& k, const Tensor& v, int layer, const int32_t* slot_block,
                       const int32_t* slot_offset, const KvPoolView& pool) override {
    return Launched("store_kv", LaunchStoreKv(k.f32(), k.cols, v.f32(), v.cols, k.rows, layer,
                                              slot_block, slot_offset, pool, stream_));
  }
  absl::Status Attention(const Tensor& q, const AttentionRow* rows, int layer,
                         const AttentionShape& shape, const KvPoolView& pool, Tensor out) override;
  absl::Status AttentionBegin(const AttentionShape& shape, int64_t n_rows,
                              AttentionState st) override {
    return Launched("attention_begin",
                    LaunchAttentionBegin(n_rows * shape.n_heads, shape.head_dim, st, stream_));
  }
  absl::Status AttentionChunks(const Tensor& q, const AttentionRow* rows, int layer,
                               int chunk_begin, int chunk_end, const AttentionShape& shape,
                               const KvPoolView& pool, AttentionState st) override;
  absl::Status AttentionFinish(const AttentionShape& shape, int64_t n_rows, AttentionState st,
                               Tensor out) override {
    counters_.attention_rows += static_cast<uint64_t>(n_rows);
    return Launched("attention_finish",
                    LaunchAttentionFinish(n_rows, shape, st, out.f32(), out.cols, stream_));
  }
  absl::Status SiluMul(const Tensor& gate, const Tensor& up, Tensor out) override {
    return Launched("silu_mul",
                    LaunchSiluMul(gate.f32(), up.f32(), gate.rows * gate.cols, out.f32(), stream_));
  }
  absl::Status Add(Tensor x, const Tensor& y) override {
    return Launched("add", LaunchAdd(x.f32(), y.f32(), x.rows * x.cols, stream_));
  }

  BackendCounters counters() const override {
    BackendCounters c = counters_;
    unsigned long long chunks = 0;
    if (cudaMemcpyAsync(&chunks, chunk_count_, sizeof(chunks), cudaMemcpyDeviceToHost, stream_) ==
            cudaSuccess &&
        cudaStreamSynchronize(stream_) == cudaSuccess) {
      c.attention_chunks = chunks;
    }
    return c;
  }
  void ResetCounters() override {
    counters_ = BackendCounters{};
    cudaMemsetAsync(chunk_count_, 0, sizeof(unsigned long long), stream_);
  }

 private:
  explicit CudaBackend(const CudaBackendOptions& o) : device_(o.device), ledger_(o.memory_limit) {}

  absl::Status Init() {
    RSD_CUDA_TRY("select device", cudaSetDevice(device_));
    RSD_CUDA_TRY("query device", cudaGetDeviceProperties(&props_, device_));
    int clock_khz = 0, bus_bits = 0;
    if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device_) == cudaSuccess &&
        cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device_) ==
            cudaSuccess) {
      bandwidth_ = 2.0 * clock_khz * 1e3 * bus_bits / 8.0;  // double data rate
    }
    cudaGetLastError();
    if (ledger_.limit() == 0 || ledger_.limit() > props_.totalGlobalMem) {
      ledger_ = MemoryLedger(props_.totalGlobalMem);
    }
    RSD_CUDA_TRY("create stream", cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    RSD_CUDA_TRY("create transfer stream",
                 cudaStreamCreateWithFlags(&transfer_, cudaStreamNonBlocking));
    RSD_CUDA_TRY("create events", cudaEventCreateWithFlags(&compute_done_, cudaEventDisableTiming));
    RSD_CUDA_TRY("create events",
                 cudaEventCreateWithFlags(&transfers_done_, cudaEventDisableTiming));
    void* p = nullptr;
    RSD_CUDA_TRY("allocate counters", cudaMalloc(&p, sizeof(unsigned long long)));
    chunk_count_ = static_cast<unsigned long long*>(p);
    RSD_CUDA_TRY("clear counters",
                 cudaMemsetAsync(chunk_count_, 0, sizeof(unsigned long long), stream_));
    return Synchronize();
  }

  absl::Status Check(const char* what, cudaError_t e) {
    last_op_ = what;
    if (e == cudaSuccess) return absl::OkStatus();
    cudaGetLastError();
    return absl::InternalError(
        absl::StrCat("CUDA ", what, " failed on ", name(), ": ", CudaText(e)));
  }
  absl::Status Launched(const char* op, cudaError_t e) {
    counters_.device_launches++;
    last_op_ = op;
    if (e == cudaSuccess) return absl::OkStatus();
    cudaGetLastError();
    return absl::InternalError(
        absl::StrCat("CUDA launch of ", op, " failed on ", name(), ": ", CudaText(e)));
  }

  // Makes `s` hold at least `bytes` (RESOURCE_EXHAUSTED naming `what` if it cannot).
  absl::Status Grow(Scratch* s, size_t bytes, std::string_view what) {
    if (s->bytes >= bytes) return absl::OkStatus();
    FreeScratch(s);
    absl::StatusOr<DevicePtr<void>> p = Alloc(bytes, what);
    if (!p.ok()) return p.status();
    s->p = p->get();
    s->bytes = bytes;
    return absl::OkStatus();
  }
  void FreeScratch(Scratch* s) {
    if (s->p != nullptr) Free(DeviceMemory(s->p));
    *s = Scratch{};
  }
  void NoteMatMul(int64_t rows) {
    BackendCounters& c = counters_;
    c.matmul_calls++;
    c.matmul_rows += static_cast<uint64_t>(rows);
    c.matmul_max_rows = std::max<uint64_t>(c.matmul_max_rows, rows);
    c.matmul_min_rows = std::min<uint64_t>(c.matmul_min_rows, rows);
  }
  // The most chunks any row of the call has: from the shape's bound, else read from the rows.
  absl::StatusOr<int> MaxChunks(const AttentionRow* rows, int64_t n_rows,
                                const AttentionShape& shape, int block_tokens) {
    int32_t max_keys = shape.max_keys;
    if (max_keys <= 0) {
      std::vector<AttentionRow> host(static_cast<size_t>(n_rows));
      RSD_RETURN_IF_ERROR(
          CopyToHost(host.data(), DeviceMemory(rows), host.size() * sizeof(AttentionRow)));
      for (const AttentionRow& r : host) max_keys = std::max(max_keys, r.n_keys);
    }
    return (max_keys + block_tokens - 1) / block_tokens;
  }

  int device_;
  cudaDeviceProp props_{};
  double bandwidth_ = 0;
  MemoryLedger ledger_;
  cudaStream_t stream_ = nullptr;    // compute: every op, and the synchronous copies
  cudaStream_t transfer_ = nullptr;  // the *Async transfers, ordered with events
  cudaEvent_t compute_done_ = nullptr, transfers_done_ = nullptr;
  BackendCounters counters_;
  unsigned long long* chunk_count_ = nullptr;
  const char* last_op_ = "nothing";
  Scratch quant_, partials_, state_;
};

absl::Status CudaBackend::MatMul(const Tensor& x, const Tensor& w, const float* bias, Tensor out) {
  NoteMatMul(x.rows);
  const int64_t n = x.rows, k = x.cols, m = w.rows;
  const uint8_t* wd = static_cast<const uint8_t*>(w.data);
  if (!IsQuantized(w.dtype)) {
    return Launched("matmul",
                    LaunchMatMulFloat(w.dtype, x.f32(), n, k, wd, m, bias, out.f32(), stream_));
  }
  // Activations quantized per 32-value block first, as the CPU does: q [n, k] int8, then d,
  // sum and s [n, k / 32] each.
  const int64_t nb = k / 32;
  const size_t qbytes = (static_cast<size_t>(n * k) + 15) / 16 * 16;
  const size_t fbytes = static_cast<size_t>(n * nb) * 4;
  RSD_RETURN_IF_ERROR(Grow(&quant_, qbytes + 3 * fbytes, "quantized activations"));
  uint8_t* base = static_cast<uint8_t*>(quant_.p);
  int8_t* q = reinterpret_cast<int8_t*>(base);
  float* d = reinterpret_cast<float*>(base + qbytes);
  int32_t* sum = reinterpret_cast<int32_t*>(base + qbytes + fbytes);
  float* s = reinterpret_cast<float*>(base + qbytes + 2 * fbytes);
  RSD_RETURN_IF_ERROR(
      Launched("quantize_q8", LaunchQuantizeQ8(x.f32(), n, k, q, d, sum, s, stream_)));
  return Launched("matmul_quant",
                  LaunchMatMulQuant(w.dtype, q, d, s, n, k, wd, m, bias, out.f32(), stream_));
}

absl::Status CudaBackend::AttentionChunks(const Tensor& q, const AttentionRow* rows, int layer,
                                          int chunk_begin, int chunk_end,
                                          const AttentionShape& shape, const KvPoolView& pool,
                                          AttentionState st) {
  absl::StatusOr<int> max_chunks = MaxChunks(rows, q.rows, shape, pool.block_tokens);
  if (!max_chunks.ok()) return max_chunks.status();
  const int end = std::min(chunk_end, *max_chunks);
  if (end <= chunk_begin || q.rows == 0) return absl::OkStatus();
  const int64_t items = q.rows * shape.n_heads;
  const size_t per_chunk = static_cast<size_t>(items) * AttentionPartialFloats(shape.head_dim);
  const int slice =
      static_cast<int>(std::clamp<size_t>(kPartialBudgetFloats / per_chunk, 1, 65535));
  const int nc = std::min(slice, end - chunk_begin);
  RSD_RETURN_IF_ERROR(Grow(&partials_, per_chunk * nc * sizeof(float), "attention partials"));
  float* partials = static_cast<float*>(partials_.p);
  // Slices of chunks, merged in order: the same bits as one pass over them all.
  for (int c0 = chunk_begin; c0 < end; c0 += nc) {
    const int n = std::min(nc, end - c0);
    RSD_RETURN_IF_ERROR(Launched(
        "attention_partials", LaunchAttentionPartials(q.f32(), q.cols, rows, q.rows, layer, c0, n,
                                                      shape, pool, partials, stream_)));
    RSD_RETURN_IF_ERROR(Launched("attention_merge",
                                 LaunchAttentionMerge(rows, q.rows, c0, n, shape, pool.block_tokens,
                                                      partials, st, chunk_count_, stream_)));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Attention(const Tensor& q, const AttentionRow* rows, int layer,
                                    const AttentionShape& shape, const KvPoolView& pool,
                                    Tensor out) {
  const int64_t items = q.rows * shape.n_heads;
  const size_t floats = static_cast<size_t>(items) * (2 + shape.head_dim);
  RSD_RETURN_IF_ERROR(Grow(&state_, floats * sizeof(float), "attention state"));
  float* base = static_cast<float*>(state_.p);
  AttentionState st{base, base + items, base + 2 * items};
  absl::StatusOr<int> max_chunks = MaxChunks(rows, q.rows, shape, pool.block_tokens);
  if (!max_chunks.ok()) return max_chunks.status();
  RSD_RETURN_IF_ERROR(AttentionBegin(shape, q.rows, st));
  RSD_RETURN_IF_ERROR(AttentionChunks(q, rows, layer, 0, *max_chunks, shape, pool, st));
  return AttentionFinish(shape, q.rows, st, out);
}

}  // namespace
}  // namespace rsd::RSD_CUDA_NS

namespace rsd {

#if defined(RSD_CUDA_EMU)
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaEmuBackend(const CudaBackendOptions& options) {
  return cuda_emu::CudaBackend::Create(options);
}
#else
bool CudaBackendBuilt() { return true; }
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options) {
  return cuda::CudaBackend::Create(options);
}
#endif

}  // namespace rsd
