// cuda-emu: the runtime API other than memory (memory.cc): errors, the device, streams and events,
// and the emulator's controls. Work queued on a stream runs only when something waits for it (see
// runtime.h).
#include "kernels/cuda/emu/runtime.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>

#include "kernels/cuda/emu/device.h"

namespace rsd::emu {

using internal::Device;
using internal::Fail;
using internal::kMaxShared;
using internal::kMaxThreads;
using internal::Op;

namespace {
thread_local cudaError_t t_last_error = cudaSuccess;
}  // namespace

cudaError_t internal::Fail(cudaError_t e) {
  t_last_error = e;
  return e;
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError:
      return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer:
      return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection:
      return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice:
      return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    case cudaErrorIllegalAddress:
      return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources:
      return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInitializationError:
      return "initialization error";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer:
      return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection:
      return "invalid copy direction for memcpy";
    case cudaErrorNoDevice:
      return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorNotReady:
      return "device not ready";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources:
      return "too many resources requested for launch";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
  }
  return "unknown error";
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return t_last_error; }

cudaError_t cudaGetDeviceCount(int* count) {
  Device::Get();
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : Fail(cudaErrorInvalidDevice);
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device != 0) return Fail(cudaErrorInvalidDevice);
  Device& d = Device::Get();
  std::memset(p, 0, sizeof(*p));
  std::snprintf(p->name, sizeof(p->name), "cuda-emu (host emulation of a CUDA device)");
  p->totalGlobalMem = d.limit;
  p->sharedMemPerBlock = kMaxShared;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = kMaxThreads;
  p->maxThreadsDim[0] = 1024;
  p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7FFFFFFF;
  p->maxGridSize[1] = 65535;
  p->maxGridSize[2] = 65535;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 1;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return Fail(cudaErrorInvalidDevice);
  *value = attr == cudaDevAttrMultiProcessorCount ? 1 : 0;
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  *total_bytes = d.limit;
  *free_bytes = d.limit - std::min(d.limit, d.stats.device_bytes);
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  d.RunAll();
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  auto* s = new Stream();
  s->flags = flags;
  d.streams.insert(s);
  *stream = s;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (stream == nullptr || !d.streams.count(stream)) return Fail(cudaErrorInvalidResourceHandle);
  d.RunUntil(stream->last);  // queued work still completes
  d.streams.erase(stream);
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.Valid(stream)) return Fail(cudaErrorInvalidResourceHandle);
  d.RunUntil(d.Resolve(stream)->last);
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.Valid(stream) || !d.events.count(event)) return Fail(cudaErrorInvalidResourceHandle);
  if (!event->op) return cudaSuccess;  // never recorded: nothing to wait for
  std::shared_ptr<Op> marker = event->op;
  std::shared_ptr<Op> op = d.Enqueue(stream, "wait event", nullptr);
  if (!marker->done) op->deps.push_back(marker);
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  auto* e = new Event();
  e->flags = flags;
  d.events.insert(e);
  *event = e;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.events.erase(event)) return Fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.Valid(stream) || !d.events.count(event)) return Fail(cudaErrorInvalidResourceHandle);
  event->op = d.Enqueue(stream, "event", nullptr);
  event->queries = 0;
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.events.count(event)) return Fail(cudaErrorInvalidResourceHandle);
  d.RunUntil(event->op);
  return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.events.count(event)) return Fail(cudaErrorInvalidResourceHandle);
  if (!event->op || event->op->done) return cudaSuccess;
  // The first query of a pending event says not ready; the next one lets the work run, so a
  // polling loop terminates but code that assumes completion without waiting is caught.
  if (event->queries++ == 0) return cudaErrorNotReady;
  d.RunUntil(event->op);
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.events.count(start) || !d.events.count(end)) return Fail(cudaErrorInvalidResourceHandle);
  if ((start->flags | end->flags) & cudaEventDisableTiming)
    return Fail(cudaErrorInvalidResourceHandle);
  if (!start->op || !end->op || !start->op->done || !end->op->done) return Fail(cudaErrorNotReady);
  *ms = static_cast<float>((end->op->done_time - start->op->done_time) * 1e3);
  return cudaSuccess;
}

void SetMemoryLimit(size_t bytes) {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  d.limit = bytes;
}

Stats GetStats() {
  Device& d = Device::Get();
  std::lock_guard<std::mutex> lock(d.mu);
  return d.stats;
}

}  // namespace rsd::emu
