// cuda-emu, the host emulation of the CUDA runtime that runs our kernels in CI: its semantics
// (shuffles, barriers, streams, events, copies) and the faults it must catch as real hardware
// would, or better (host use of device memory, host pointers in kernels, missing synchronization,
// shared-memory races, divergent barriers, launch limits). Label: unit.
#define RSD_CUDA_EMU 1
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/compat.cuh"

namespace rsd::cuda_emu {
namespace {

// ---- kernels used by the tests ----

__global__ void ShuffleKernel(int* out, int width) {
  const int lane = threadIdx.x;
  out[lane * 4 + 0] = __shfl_down_sync(0xFFFFFFFFu, lane * 10, 3, width);
  out[lane * 4 + 1] = __shfl_xor_sync(0xFFFFFFFFu, lane * 10, 5, width);
  out[lane * 4 + 2] = __shfl_up_sync(0xFFFFFFFFu, lane * 10, 2, width);
  out[lane * 4 + 3] = __shfl_sync(0xFFFFFFFFu, lane * 10, 7, width);
}

// A block sum through shared memory with barriers: each thread adds its pair each round.
__global__ void BlockSumKernel(const float* x, float* out) {
  RSD_SHARED(float, buf, 256);
  const int t = threadIdx.x;
  buf[t] = x[blockIdx.x * 256 + t];
  __syncthreads();
  for (int w = 128; w >= 1; w /= 2) {
    if (t < w) buf[t] = buf[t] + buf[t + w];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = buf[0];
}

__global__ void RacyKernel(float* out) {
  RSD_SHARED(float, v, 32);
  v[threadIdx.x] = 1.0f;
  if (threadIdx.x > 0) out[threadIdx.x] = v[threadIdx.x - 1];  // a neighbour's, no barrier
}

__global__ void UnwrittenSharedKernel(float* out) {
  RSD_SHARED(float, v, 32);
  v[threadIdx.x] = 1.0f;
  out[threadIdx.x] = v[31 - threadIdx.x];  // thread 0 runs before thread 31 has written
}

__global__ void DivergentBarrierKernel(float* out) {
  if (threadIdx.x >= 16) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

__global__ void SharedOverrunKernel(float* out) {
  RSD_SHARED(float, v, 8);
  v[threadIdx.x] = 2.0f;  // 32 threads, 8 elements
  out[0] = 0.0f;
}

__global__ void ShuffleOutsideMaskKernel(int* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_down_sync(0x0000FFFFu, static_cast<int>(threadIdx.x), 8);
}

__global__ void WriteKernel(float* p, int64_t n, float value) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) p[i] = value;
}

__global__ void TooBigSharedKernel(float* out) {
  RSD_SHARED(float, big, 16 * 1024);  // 64 KiB
  big[threadIdx.x] = 1.0f;
  out[0] = 0.0f;
}

template <class T>
T* DeviceAlloc(size_t n) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  return static_cast<T*>(p);
}

TEST(CudaEmu, ShufflesFollowCudaSemantics) {
  for (int width : {32, 16, 8}) {
    int* d = DeviceAlloc<int>(32 * 4);
    RSD_LAUNCH(ShuffleKernel, 1, 32, nullptr, d, width);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    std::vector<int> h(32 * 4);
    ASSERT_EQ(cudaMemcpy(h.data(), d, h.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int lane = 0; lane < 32; ++lane) {
      const int seg = lane & ~(width - 1), in = lane & (width - 1);
      EXPECT_EQ(h[lane * 4 + 0], (in + 3 < width ? lane + 3 : lane) * 10) << width << " " << lane;
      EXPECT_EQ(h[lane * 4 + 1], (seg + ((in ^ 5) & (width - 1))) * 10) << width << " " << lane;
      EXPECT_EQ(h[lane * 4 + 2], (in >= 2 ? lane - 2 : lane) * 10) << width << " " << lane;
      EXPECT_EQ(h[lane * 4 + 3], (seg + (7 & (width - 1))) * 10) << width << " " << lane;
    }
    ASSERT_EQ(cudaFree(d), cudaSuccess);
  }
}

TEST(CudaEmu, BarriersOrderSharedMemoryAcrossThreads) {
  const int blocks = 3;
  std::vector<float> x(blocks * 256);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17);
  float* dx = DeviceAlloc<float>(x.size());
  float* dout = DeviceAlloc<float>(blocks);
  ASSERT_EQ(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  const emu::Stats before = emu::GetStats();
  RSD_LAUNCH(BlockSumKernel, blocks, 256, nullptr, dx, dout);
  std::vector<float> out(blocks);
  ASSERT_EQ(cudaMemcpy(out.data(), dout, blocks * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int b = 0; b < blocks; ++b) {
    float want = 0;
    for (int i = 0; i < 256; ++i) want += x[b * 256 + i];
    EXPECT_EQ(out[b], want) << "block " << b;
  }
  const emu::Stats after = emu::GetStats();
  EXPECT_EQ(after.launches - before.launches, 1u);
  EXPECT_EQ(after.blocks - before.blocks, 3u);
  EXPECT_EQ(after.threads - before.threads, 768u);
  EXPECT_GE(after.barriers - before.barriers, 3u * 9u);
  ASSERT_EQ(cudaFree(dx), cudaSuccess);
  ASSERT_EQ(cudaFree(dout), cudaSuccess);
}

// Work on one stream runs only when something waits for it, in dependency order: a copy on another
// stream that is not ordered after the kernel by an event sees the memory as it was.
TEST(CudaEmu, StreamsRunOnlyWhatWasOrderedBeforeAWait) {
  const int64_t n = 1000;
  float* d = DeviceAlloc<float>(n);
  cudaStream_t compute, copy;
  ASSERT_EQ(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking), cudaSuccess);
  void* pinned = nullptr;
  ASSERT_EQ(cudaHostAlloc(&pinned, n * 4, cudaHostAllocDefault), cudaSuccess);
  float* h = static_cast<float*>(pinned);

  // Unordered: the copy stream does not wait for the kernel.
  ASSERT_EQ(cudaMemsetAsync(d, 0, n * 4, compute), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(compute), cudaSuccess);
  RSD_LAUNCH(WriteKernel, 4, 256, compute, d, n, 7.0f);
  ASSERT_EQ(cudaMemcpyAsync(h, d, n * 4, cudaMemcpyDeviceToHost, copy), cudaSuccess);
  EXPECT_EQ(h[0] != h[0], true) << "an async copy into pinned memory is undefined until it ran";
  ASSERT_EQ(cudaStreamSynchronize(copy), cudaSuccess);
  EXPECT_EQ(h[0], 0.0f) << "the kernel had not run: nothing ordered it before the copy";
  ASSERT_EQ(cudaStreamSynchronize(compute), cudaSuccess);

  // Ordered by an event: the copy sees the kernel's writes.
  cudaEvent_t done;
  ASSERT_EQ(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), cudaSuccess);
  RSD_LAUNCH(WriteKernel, 4, 256, compute, d, n, 9.0f);
  ASSERT_EQ(cudaEventRecord(done, compute), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(copy, done, 0), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(h, d, n * 4, cudaMemcpyDeviceToHost, copy), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(copy), cudaSuccess);
  EXPECT_EQ(h[0], 9.0f);
  EXPECT_EQ(h[n - 1], 9.0f);

  // A synchronous copy on the legacy stream does not wait for a non-blocking stream either.
  RSD_LAUNCH(WriteKernel, 4, 256, compute, d, n, 11.0f);
  std::vector<float> pageable(n);
  ASSERT_EQ(cudaMemcpy(pageable.data(), d, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(pageable[0], 9.0f);
  ASSERT_EQ(cudaStreamSynchronize(compute), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(pageable.data(), d, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(pageable[0], 11.0f);

  ASSERT_EQ(cudaEventDestroy(done), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(compute), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(copy), cudaSuccess);
  ASSERT_EQ(cudaFreeHost(pinned), cudaSuccess);
  ASSERT_EQ(cudaFree(d), cudaSuccess);
}

TEST(CudaEmu, ErrorsARealRuntimeReturns) {
  float* d = DeviceAlloc<float>(16);
  RSD_LAUNCH(WriteKernel, 1, 2048, nullptr, d, 16, 1.0f);  // over 1024 threads per block
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "launch errors are not sticky";
  std::vector<float> h(32);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 32 * 4, cudaMemcpyHostToDevice), cudaErrorInvalidValue)
      << "a copy past the end of the allocation";
  EXPECT_EQ(cudaMemcpy(d, h.data(), 16 * 4, cudaMemcpyDeviceToHost),
            cudaErrorInvalidMemcpyDirection);
  EXPECT_EQ(cudaFree(h.data()), cudaErrorInvalidDevicePointer);
  size_t free_bytes = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
  void* huge = nullptr;
  EXPECT_EQ(cudaMalloc(&huge, total + 1), cudaErrorMemoryAllocation);
  EXPECT_EQ(huge, nullptr);
  ASSERT_EQ(cudaFree(d), cudaSuccess);
}

using CudaEmuDeathTest = ::testing::Test;

TEST(CudaEmuDeathTest, HostCodeTouchingDeviceMemoryFaults) {
  float* d = DeviceAlloc<float>(64);
  EXPECT_DEATH(
      {
        volatile float v = d[3];
        (void)v;
      },
      "host code accessed .* 12 bytes into device");
  ASSERT_EQ(cudaFree(d), cudaSuccess);
}

TEST(CudaEmuDeathTest, KernelWithAHostPointerIsRefused) {
  std::vector<float> host(64);
  EXPECT_DEATH(RSD_LAUNCH(WriteKernel, 1, 64, nullptr, host.data(), 64, 1.0f),
               "WriteKernel: argument 0 .* is not device memory");
}

TEST(CudaEmuDeathTest, KernelOverrunningAnAllocationFaults) {
  float* d = DeviceAlloc<float>(100);
  EXPECT_DEATH(
      {
        RSD_LAUNCH(WriteKernel, 1, 128, nullptr, d, 128, 1.0f);
        cudaDeviceSynchronize();
      },
      "a kernel accessed .* past the end of device allocation");
  ASSERT_EQ(cudaFree(d), cudaSuccess);
}

TEST(CudaEmuDeathTest, UseAfterFreeFaults) {
  float* d = DeviceAlloc<float>(100);
  ASSERT_EQ(cudaFree(d), cudaSuccess);
  EXPECT_DEATH(
      {
        volatile float v = d[0];
        (void)v;
      },
      "freed device allocation");
}

TEST(CudaEmuDeathTest, SharedMemoryRaceIsCaught) {
  float* d = DeviceAlloc<float>(32);
  EXPECT_DEATH(
      {
        RSD_LAUNCH(RacyKernel, 1, 32, nullptr, d);
        cudaDeviceSynchronize();
      },
      "data race on shared v");
  ASSERT_EQ(cudaFree(d), cudaSuccess);
}

TEST(CudaEmuDeathTest, SharedMemoryReadBeforeAnyWriteIsCaught) {
  float* d = DeviceAlloc<float>(32);
  EXPECT_DEATH(
      {
        RSD_LAUNCH(UnwrittenSharedKernel, 1, 32, nullptr, d);
        cudaDeviceSynchronize();
      },
      "reads v\\[31\\] .* which no thread of the block has written");
  ASSERT_EQ(cudaFree(d), cudaSuccess);
}

TEST(CudaEmuDeathTest, BarrierInDivergentCodeIsCaught) {
  float* d = DeviceAlloc<float>(32);
  EXPECT_DEATH(
      {
        RSD_LAUNCH(DivergentBarrierKernel, 1, 32, nullptr, d);
        cudaDeviceSynchronize();
      },
      "reached by 16 of 32 threads");
  ASSERT_EQ(cudaFree(d), cudaSuccess);
}

TEST(CudaEmuDeathTest, SharedArrayBoundsAreChecked) {
  float* d = DeviceAlloc<float>(1);
  EXPECT_DEATH(
      {
        RSD_LAUNCH(SharedOverrunKernel, 1, 32, nullptr, d);
        cudaDeviceSynchronize();
      },
      "index 8 is outside shared array v\\[8\\]");
  ASSERT_EQ(cudaFree(d), cudaSuccess);
}

TEST(CudaEmuDeathTest, SharedMemoryLimitIsEnforced) {
  float* d = DeviceAlloc<float>(1);
  EXPECT_DEATH(
      {
        RSD_LAUNCH(TooBigSharedKernel, 1, 32, nullptr, d);
        cudaDeviceSynchronize();
      },
      "over the 49152 a block may use");
  ASSERT_EQ(cudaFree(d), cudaSuccess);
}

TEST(CudaEmuDeathTest, ShuffleReadingALaneOutsideItsMaskIsCaught) {
  int* d = DeviceAlloc<int>(32);
  EXPECT_DEATH(
      {
        RSD_LAUNCH(ShuffleOutsideMaskKernel, 1, 32, nullptr, d);
        cudaDeviceSynchronize();
      },
      "reads lane 16, which is not in its mask 0x0000ffff");
  ASSERT_EQ(cudaFree(d), cudaSuccess);
}

TEST(CudaEmuDeathTest, ShuffleWaitingForAMissingLaneIsCaught) {
  int* d = DeviceAlloc<int>(32);
  EXPECT_DEATH(
      {
        RSD_LAUNCH(ShuffleKernel, 1, 16, nullptr, d, 32);  // the full mask names lanes 16..31
        cudaDeviceSynchronize();
      },
      "names lane 16, which does not exist");
  ASSERT_EQ(cudaFree(d), cudaSuccess);
}

}  // namespace
}  // namespace rsd::cuda_emu
