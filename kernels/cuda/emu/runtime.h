// cuda-emu: a host emulation of the part of the CUDA runtime and device language our kernels use,
// so that the same .cu sources compile as host C++ (with RSD_CUDA_EMU defined, through
// kernels/cuda/compat.cuh) and run in every CI run without a GPU (DESIGN.md section 2).
//
// It is written to catch what real hardware would, and some things hardware only does by chance:
//  - Each GPU thread is a fiber; barriers (__syncthreads, __syncwarp) and warp shuffles really
//    wait for the threads they name. Threads run in an order that changes from pass to pass and
//    blocks run in reverse order, so a missing barrier shows instead of happening to work.
//  - Device memory is a separate mapping that host code cannot touch: outside the emulated
//    device's execution it is PROT_NONE, so host code that dereferences a device pointer faults
//    with a message naming the allocation. Each allocation ends at a guard page (an overrun
//    faults) and freed memory stays unmapped (a use after free faults). New allocations hold
//    NaN bytes (0xFF), as stale memory would.
//  - A pointer argument of a kernel must point into a live device allocation (or be null).
//  - Work is queued per stream and runs only when something waits for it (a synchronize, an
//    event, a synchronous copy), in dependency order only: work on another stream that was not
//    ordered by an event has not run yet. So a missing synchronization or event shows as stale
//    data. Asynchronous copies into pinned host memory fill the destination with 0xFF until
//    they run.
//  - Launch limits: at most 1024 threads per block, 48 KiB of shared memory per block, grid
//    dimensions within CUDA's. Shared memory (declared with RSD_SHARED) is bounds-checked and
//    checked for data races between barriers; a barrier reached by only part of a block, or a
//    shuffle naming a lane that does not take part, is an error.
// A broken kernel (fault, race, bad barrier) aborts with a message, as a sanitizer does; errors a
// real runtime returns (bad launch configuration, out of memory, bad copy) are returned.
//
// Limits: one emulated device; blocks run one at a time on the host thread that waits for them;
// global memory is not checked for races; a kernel that reads a host pointer through a struct in
// device memory is not caught.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

namespace rsd::emu {

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
};
using uint3 = dim3;

// Codes as the CUDA runtime numbers them.
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

struct Stream;
struct Event;
using cudaStream_t = Stream*;
using cudaEvent_t = Event*;

constexpr unsigned int cudaStreamDefault = 0x0;
constexpr unsigned int cudaStreamNonBlocking = 0x1;
constexpr unsigned int cudaEventDefault = 0x0;
constexpr unsigned int cudaEventDisableTiming = 0x2;
constexpr unsigned int cudaHostAllocDefault = 0x0;

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  int regsPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int major;
  int minor;
  int multiProcessorCount;
  int memoryBusWidth;  // bits
  int l2CacheSize;
};

enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMemoryClockRate = 36,  // kHz
  cudaDevAttrGlobalMemoryBusWidth = 37,
};

const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
// The emulated device reports 0 for the memory clock (it has no memory bandwidth of its own).
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaDeviceSynchronize();

cudaError_t cudaMalloc(void** ptr, size_t bytes);
template <class T>
cudaError_t cudaMalloc(T** ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaFree(void* ptr);
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int flags);
cudaError_t cudaMallocHost(void** ptr, size_t bytes);
cudaError_t cudaFreeHost(void* ptr);

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream = nullptr);

cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags = 0);

cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

// ---- Emulator controls (not CUDA API) ----

// Device memory the emulated device reports and allows (default 16 GiB, or the environment's
// RSD_CUDA_EMU_MEMORY in bytes). Allocations beyond it fail with cudaErrorMemoryAllocation.
void SetMemoryLimit(size_t bytes);
// What the emulator has done, for tests that prove a path ran.
struct Stats {
  uint64_t launches = 0;
  uint64_t blocks = 0;
  uint64_t threads = 0;
  uint64_t barriers = 0;  // block and warp barriers completed
  uint64_t copies = 0;    // memcpy operations executed
  uint64_t bytes_copied = 0;
  uint64_t flushes = 0;     // times queued work ran because something waited for it
  size_t device_bytes = 0;  // live device allocations
  size_t peak_device_bytes = 0;
  size_t pinned_bytes = 0;  // live pinned host allocations
};
Stats GetStats();
// Whether p lies in a live device allocation / pinned host allocation.
bool IsDevicePointer(const void* p);
bool IsPinnedPointer(const void* p);

// ---- Device side ----

namespace detail {
const dim3& ThreadIdx();
const dim3& BlockIdx();
const dim3& BlockDim();
const dim3& GridDim();
void SyncThreads();
void SyncWarp(unsigned int mask);
// Deposits `value` for a warp exchange among the lanes of `mask`, waits for them, and returns
// the value lane `src_lane` deposited.
uint64_t WarpExchange(unsigned int mask, uint64_t value, int src_lane);
int LaneId();
[[noreturn]] void KernelFail(const std::string& message);

// Shared memory: one array per declaration site per block.
struct SharedSite {
  const char* name;
  const char* file;
  int line;
};
struct SharedArrayState;  // data, shadow and bounds of one site in the running block
SharedArrayState* SharedArrayFor(const SharedSite* site, size_t elem_bytes, size_t count);
void* SharedData(SharedArrayState* a);
void SharedRead(SharedArrayState* a, size_t index);
void SharedWrite(SharedArrayState* a, size_t index);

void CheckKernelPointer(const char* kernel, int index, const void* p);
void EnqueueLaunch(const char* kernel, dim3 grid, dim3 block, size_t shared_bytes,
                   cudaStream_t stream, std::function<void()> body);

template <class T>
void CheckArg(const char* kernel, int index, const T& v) {
  if constexpr (std::is_pointer_v<T>)
    CheckKernelPointer(kernel, index, static_cast<const void*>(v));
}

template <class T>
uint64_t ToBits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T FromBits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
}  // namespace detail

inline void __syncthreads() { detail::SyncThreads(); }
inline void __syncwarp(unsigned int mask = 0xffffffffu) { detail::SyncWarp(mask); }

// Shuffles (CUDA semantics, `width` a power of two up to 32: lanes form segments of `width`; a
// source outside the lane's segment gives the lane's own value).
template <class T>
T __shfl_sync(unsigned int mask, T v, int src, int width = 32) {
  const int lane = detail::LaneId();
  const int s = (lane & ~(width - 1)) + (src & (width - 1));
  return detail::FromBits<T>(detail::WarpExchange(mask, detail::ToBits(v), s));
}
template <class T>
T __shfl_down_sync(unsigned int mask, T v, unsigned int delta, int width = 32) {
  const int lane = detail::LaneId();
  const int in_seg = lane & (width - 1);
  const int s = in_seg + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  return detail::FromBits<T>(detail::WarpExchange(mask, detail::ToBits(v), s));
}
template <class T>
T __shfl_up_sync(unsigned int mask, T v, unsigned int delta, int width = 32) {
  const int lane = detail::LaneId();
  const int in_seg = lane & (width - 1);
  const int s = in_seg >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : lane;
  return detail::FromBits<T>(detail::WarpExchange(mask, detail::ToBits(v), s));
}
template <class T>
T __shfl_xor_sync(unsigned int mask, T v, int lane_mask, int width = 32) {
  const int lane = detail::LaneId();
  int s = lane ^ lane_mask;
  if ((s & ~(width - 1)) != (lane & ~(width - 1))) s = lane;
  return detail::FromBits<T>(detail::WarpExchange(mask, detail::ToBits(v), s));
}

// Correctly rounded IEEE operations: the host's operators are (the build never contracts).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __int_as_float(int i) { return detail::FromBits<float>(static_cast<uint32_t>(i)); }
inline int __float_as_int(float f) {
  return static_cast<int>(static_cast<uint32_t>(detail::ToBits(f)));
}
inline float __uint_as_float(unsigned int u) { return detail::FromBits<float>(u); }
inline unsigned int __float_as_uint(float f) { return static_cast<uint32_t>(detail::ToBits(f)); }

template <class T>
T min(T a, T b) {
  return b < a ? b : a;
}
template <class T>
T max(T a, T b) {
  return a < b ? b : a;
}

// Blocks run one at a time and threads never preempt each other, so a plain update is atomic.
template <class T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}

// A shared-memory array as RSD_SHARED declares it: element access is bounds- and race-checked.
template <class T>
class SharedArray {
 public:
  class Ref {
   public:
    Ref(detail::SharedArrayState* a, size_t i) : a_(a), i_(i) {}
    operator T() const {  // NOLINT: reads like the array element it stands for
      detail::SharedRead(a_, i_);
      return static_cast<const T*>(detail::SharedData(a_))[i_];
    }
    Ref& operator=(T v) {
      detail::SharedWrite(a_, i_);
      static_cast<T*>(detail::SharedData(a_))[i_] = v;
      return *this;
    }
    Ref& operator=(const Ref& o) { return *this = static_cast<T>(o); }

   private:
    detail::SharedArrayState* a_;
    size_t i_;
  };
  SharedArray(const detail::SharedSite* site, size_t count)
      : a_(detail::SharedArrayFor(site, sizeof(T), count)) {}
  Ref operator[](size_t i) const { return Ref(a_, i); }

 private:
  detail::SharedArrayState* a_;
};

// Launches `kernel` as CUDA's <<<grid, block, shared, stream>>> would: the arguments are converted
// to the kernel's parameter types and copied now; the grid runs when its stream is waited for.
template <class... P, class... A>
void Launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t shared_bytes,
            cudaStream_t stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  std::tuple<std::decay_t<P>...> bound(static_cast<std::decay_t<P>>(std::forward<A>(args))...);
  [&]<size_t... I>(std::index_sequence<I...>) {
    (detail::CheckArg(name, static_cast<int>(I), std::get<I>(bound)), ...);
  }
  (std::index_sequence_for<P...>{});
  detail::EnqueueLaunch(name, grid, block, shared_bytes, stream,
                        [kernel, bound]() { std::apply(kernel, bound); });
}

}  // namespace rsd::emu

#define threadIdx (::rsd::emu::detail::ThreadIdx())
#define blockIdx (::rsd::emu::detail::BlockIdx())
#define blockDim (::rsd::emu::detail::BlockDim())
#define gridDim (::rsd::emu::detail::GridDim())
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Kernels declare shared memory with RSD_SHARED (kernels/cuda/compat.cuh) so it can be checked.
#define __shared__ static_assert(false, "declare shared memory with RSD_SHARED");
