// The emulated CUDA runtime: errors, devices, memory (with an allocation registry that catches
// copies and kernels a GPU would fault on), streams and events. Not the scheduler, not cuBLAS.
#include <sys/sysinfo.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "cuda/emu/internal.h"
#include "cuda/emu/runtime.h"

namespace evo::emu {

namespace {

// ---- errors ---------------------------------------------------------------------------------

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local cudaError_t t_detail_code = cudaSuccess;
thread_local std::string t_detail;
thread_local std::string t_message;

// Records a failure for cudaGetLastError, and why, for cudaGetErrorString to tell people.
cudaError_t fail(cudaError_t code, std::string why) {
  t_last_error = code;
  t_detail_code = code;
  t_detail = std::move(why);
  return code;
}

const char* base_error_string(cudaError_t e) {
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
    case cudaErrorInvalidSymbol:
      return "invalid device symbol";
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
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
    case cudaErrorNotSupported:
      return "operation not supported";
  }
  return "unrecognized error code";
}

std::string pointer_text(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

// ---- the allocation registry ----------------------------------------------------------------

struct Allocation {
  std::size_t bytes;
  bool pinned;  // cudaMallocHost: host memory that kernels may also use
};

std::mutex g_alloc_mutex;
std::map<std::uintptr_t, Allocation> g_allocations;  // by base address

// The allocation holding `p` (one past its end counts), or end().
std::map<std::uintptr_t, Allocation>::const_iterator find_allocation(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  auto it = g_allocations.upper_bound(a);
  if (it == g_allocations.begin()) return g_allocations.end();
  --it;
  return a <= it->first + it->second.bytes ? it : g_allocations.end();
}

cudaError_t allocate(void** ptr, std::size_t bytes, bool pinned, const char* call) {
  if (!ptr) return fail(cudaErrorInvalidValue, std::string(call) + ": null result pointer");
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;  // as CUDA: success and a null pointer
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes) != 0)
    return fail(cudaErrorMemoryAllocation,
                std::string(call) + " of " + std::to_string(bytes) + " bytes");
  // Fresh GPU memory holds garbage; 0xFF bytes (NaN as float, -1 as int) make reads of
  // never-written memory show up in results instead of passing as zeros.
  std::memset(p, 0xff, bytes);
  {
    std::lock_guard<std::mutex> lock(g_alloc_mutex);
    g_allocations[reinterpret_cast<std::uintptr_t>(p)] = {bytes, pinned};
  }
  *ptr = p;
  return cudaSuccess;
}

cudaError_t release(void* ptr, bool pinned, const char* call) {
  if (!ptr) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(g_alloc_mutex);
    auto it = g_allocations.find(reinterpret_cast<std::uintptr_t>(ptr));
    if (it == g_allocations.end() || it->second.pinned != pinned)
      return fail(cudaErrorInvalidValue,
                  std::string(call) + "(" + pointer_text(ptr) + "): not a pointer returned by " +
                      (pinned ? "cudaMallocHost" : "cudaMalloc") + ", or freed already");
    g_allocations.erase(it);
  }
  std::free(ptr);
  return cudaSuccess;
}

// Whether [p, p + bytes) may be the device side of a copy: inside one allocation.
std::string device_side_problem(const void* p, std::size_t bytes, const char* side) {
  std::lock_guard<std::mutex> lock(g_alloc_mutex);
  auto it = find_allocation(p);
  if (it == g_allocations.end())
    return std::string(side) + " " + pointer_text(p) + " is not device memory";
  const std::size_t offset = reinterpret_cast<std::uintptr_t>(p) - it->first;
  if (offset + bytes > it->second.bytes)
    return std::string(side) + " " + pointer_text(p) + ": " + std::to_string(bytes) +
           " bytes at offset " + std::to_string(offset) + " run past the end of a " +
           std::to_string(it->second.bytes) + "-byte allocation";
  return {};
}

// Whether [p, p + bytes) may be the host side of a copy: not inside device memory (pinned host
// memory is fine; so is the address just past a device buffer, which belongs to someone else).
std::string host_side_problem(const void* p, const char* side) {
  std::lock_guard<std::mutex> lock(g_alloc_mutex);
  auto it = find_allocation(p);
  if (it == g_allocations.end() || it->second.pinned ||
      reinterpret_cast<std::uintptr_t>(p) == it->first + it->second.bytes)
    return {};
  return std::string(side) + " " + pointer_text(p) + " is device memory";
}

const char* kind_name(cudaMemcpyKind kind) {
  switch (kind) {
    case cudaMemcpyHostToHost:
      return "cudaMemcpyHostToHost";
    case cudaMemcpyHostToDevice:
      return "cudaMemcpyHostToDevice";
    case cudaMemcpyDeviceToHost:
      return "cudaMemcpyDeviceToHost";
    case cudaMemcpyDeviceToDevice:
      return "cudaMemcpyDeviceToDevice";
    case cudaMemcpyDefault:
      return "cudaMemcpyDefault";
  }
  return "an unknown cudaMemcpyKind";
}

cudaError_t copy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                 const char* call) {
  if (bytes == 0) return cudaSuccess;
  if (!dst || !src) return fail(cudaErrorInvalidValue, std::string(call) + ": null pointer");
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  std::string problem;
  switch (kind) {
    case cudaMemcpyHostToHost:
    case cudaMemcpyHostToDevice:
    case cudaMemcpyDeviceToHost:
    case cudaMemcpyDeviceToDevice:
      problem = dst_device ? device_side_problem(dst, bytes, "destination")
                           : host_side_problem(dst, "destination");
      if (problem.empty())
        problem = src_device ? device_side_problem(src, bytes, "source")
                             : host_side_problem(src, "source");
      break;
    case cudaMemcpyDefault:
      break;  // any direction: the pointers say which (unified addressing)
    default:
      return fail(cudaErrorInvalidMemcpyDirection,
                  std::string(call) + ": kind " + std::to_string(int(kind)));
  }
  if (!problem.empty())
    return fail(cudaErrorInvalidValue, std::string(call) + " " + kind_name(kind) + " of " +
                                           std::to_string(bytes) + " bytes: " + problem);
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t set(void* dst, int value, std::size_t bytes, const char* call) {
  if (bytes == 0) return cudaSuccess;
  const std::string problem = device_side_problem(dst, bytes, "destination");
  if (!problem.empty()) return fail(cudaErrorInvalidValue, std::string(call) + ": " + problem);
  std::memset(dst, value, bytes);
  return cudaSuccess;
}

// ---- devices --------------------------------------------------------------------------------

int device_count() {
  static const int n = [] {
    const char* v = std::getenv("EVO_EMU_DEVICES");
    const int k = v ? std::atoi(v) : 1;
    return std::clamp(k, 0, 64);
  }();
  return n;
}
thread_local int t_device = 0;

std::mutex g_attr_mutex;
std::unordered_map<const void*, std::size_t> g_smem_limits;  // per kernel, once raised

// ---- streams and events ---------------------------------------------------------------------

std::mutex g_handle_mutex;
std::unordered_set<const void*> g_streams, g_events;

}  // namespace

struct CUstream_st {
  unsigned flags;
};
struct CUevent_st {
  unsigned flags;
  bool recorded;
  std::chrono::steady_clock::time_point time;
};

namespace detail {

bool device_accessible(const void* p) {
  std::lock_guard<std::mutex> lock(g_alloc_mutex);
  return find_allocation(p) != g_allocations.end();
}

std::string check_device_range(const void* p, std::size_t bytes) {
  return device_side_problem(p, bytes, "pointer");
}

bool stream_is_valid(cudaStream_t stream) {
  if (!stream) return true;
  std::lock_guard<std::mutex> lock(g_handle_mutex);
  return g_streams.count(stream) != 0;
}

std::size_t dynamic_smem_limit(const void* kernel) {
  std::lock_guard<std::mutex> lock(g_attr_mutex);
  auto it = g_smem_limits.find(kernel);
  return it == g_smem_limits.end() ? kSharedMemPerBlock : it->second;
}

bool pointer_checks_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("EVO_EMU_CHECK_POINTERS");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return enabled;
}

cudaError_t set_function_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (!kernel) return fail(cudaErrorInvalidValue, "cudaFuncSetAttribute: null kernel");
  switch (attr) {
    case cudaFuncAttributeMaxDynamicSharedMemorySize:
      if (value < 0 || std::size_t(value) > kSharedMemPerBlockOptin)
        return fail(cudaErrorInvalidValue,
                    "cudaFuncSetAttribute: " + std::to_string(value) +
                        " bytes of dynamic shared memory; the device allows at most " +
                        std::to_string(kSharedMemPerBlockOptin));
      {
        std::lock_guard<std::mutex> lock(g_attr_mutex);
        g_smem_limits[kernel] = std::size_t(value);  // lower than 48 KiB lowers it, as on a GPU
      }
      return cudaSuccess;
    case cudaFuncAttributePreferredSharedMemoryCarveout:
      return value >= -1 && value <= 100
                 ? cudaSuccess
                 : fail(cudaErrorInvalidValue,
                        "cudaFuncSetAttribute: carveout " + std::to_string(value) + "%");
  }
  return fail(cudaErrorInvalidValue, "cudaFuncSetAttribute: attribute not emulated");
}

cudaError_t copy_symbol(void* symbol, std::size_t symbol_bytes, const void* src, std::size_t bytes,
                        std::size_t offset, bool to_symbol) {
  if (offset + bytes > symbol_bytes)
    return fail(cudaErrorInvalidValue,
                "cudaMemcpy" + std::string(to_symbol ? "To" : "From") + "Symbol: " +
                    std::to_string(bytes) + " bytes at offset " + std::to_string(offset) +
                    " overrun a " + std::to_string(symbol_bytes) + "-byte symbol");
  char* s = static_cast<char*>(symbol) + offset;
  if (to_symbol)
    std::memcpy(s, src, bytes);
  else
    std::memcpy(const_cast<void*>(src), s, bytes);
  return cudaSuccess;
}

}  // namespace detail

const char* cudaGetErrorString(cudaError_t error) {
  if (error == t_detail_code && error != cudaSuccess && !t_detail.empty()) {
    t_message = std::string(base_error_string(error)) + " (CUDA emulator: " + t_detail + ")";
    return t_message.c_str();
  }
  return base_error_string(error);
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
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
    case cudaErrorInvalidSymbol:
      return "cudaErrorInvalidSymbol";
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
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported:
      return "cudaErrorNotSupported";
  }
  return "cudaErrorUnknown";
}

cudaError_t cudaGetLastError() {
  return std::exchange(t_last_error, cudaSuccess);
}
cudaError_t cudaPeekAtLastError() {
  return t_last_error;
}

// ---- devices ------------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue, "cudaGetDeviceCount: null pointer");
  *count = device_count();
  return device_count() > 0 ? cudaSuccess
                            : fail(cudaErrorNoDevice, "EVO_EMU_DEVICES=0 hides every device");
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= device_count())
    return fail(cudaErrorInvalidDevice, "device " + std::to_string(device) + " of " +
                                            std::to_string(device_count()) +
                                            " emulated devices (set EVO_EMU_DEVICES for more)");
  t_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue, "cudaGetDevice: null pointer");
  *device = t_device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (!prop) return fail(cudaErrorInvalidValue, "cudaGetDeviceProperties: null pointer");
  if (device < 0 || device >= device_count())
    return fail(cudaErrorInvalidDevice, "device " + std::to_string(device));
  *prop = cudaDeviceProp{};
  const int runners = detail::runner_count();
  std::snprintf(prop->name, sizeof prop->name, "evo CUDA emulator (%d host threads)", runners);
  struct sysinfo info {};
  sysinfo(&info);
  prop->totalGlobalMem = std::size_t(info.totalram) * info.mem_unit;
  prop->sharedMemPerBlock = kSharedMemPerBlock;
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->memPitch = std::size_t(1) << 31;
  prop->maxThreadsPerBlock = kMaxThreadsPerBlock;
  prop->maxThreadsDim[0] = kMaxThreadsPerBlock;
  prop->maxThreadsDim[1] = kMaxThreadsPerBlock;
  prop->maxThreadsDim[2] = kMaxBlockDimZ;
  prop->maxGridSize[0] = 0x7fffffff;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->totalConstMem = 65536;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = runners;
  prop->canMapHostMemory = 1;
  prop->concurrentKernels = 1;
  prop->pciBusID = device;
  prop->asyncEngineCount = 1;
  prop->unifiedAddressing = 1;
  prop->memoryBusWidth = 64;
  prop->l2CacheSize = 50 * 1024 * 1024;
  prop->maxThreadsPerMultiProcessor = 2048;
  prop->sharedMemPerMultiprocessor = 228 * 1024;
  prop->regsPerMultiprocessor = 65536;
  prop->managedMemory = 1;
  prop->sharedMemPerBlockOptin = kSharedMemPerBlockOptin;
  prop->maxBlocksPerMultiProcessor = 32;
  prop->reservedSharedMemPerBlock = 1024;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  return cudaSuccess;
}
cudaError_t cudaDeviceReset() {
  return cudaSuccess;
}

// ---- memory -------------------------------------------------------------------------------

cudaError_t cudaMalloc(void** ptr, std::size_t bytes) {
  return allocate(ptr, bytes, false, "cudaMalloc");
}
cudaError_t cudaFree(void* ptr) {
  return release(ptr, false, "cudaFree");
}
cudaError_t cudaMallocHost(void** ptr, std::size_t bytes) {
  return allocate(ptr, bytes, true, "cudaMallocHost");
}
cudaError_t cudaFreeHost(void* ptr) {
  return release(ptr, true, "cudaFreeHost");
}

cudaError_t cudaMemGetInfo(std::size_t* free_bytes, std::size_t* total_bytes) {
  if (!free_bytes || !total_bytes) return fail(cudaErrorInvalidValue, "cudaMemGetInfo: null");
  struct sysinfo info {};
  sysinfo(&info);
  *free_bytes = std::size_t(info.freeram) * info.mem_unit;
  *total_bytes = std::size_t(info.totalram) * info.mem_unit;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  return copy(dst, src, bytes, kind, "cudaMemcpy");
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (!detail::stream_is_valid(stream))
    return fail(cudaErrorInvalidResourceHandle, "cudaMemcpyAsync on a destroyed stream");
  return copy(dst, src, bytes, kind, "cudaMemcpyAsync");
}
cudaError_t cudaMemset(void* dst, int value, std::size_t bytes) {
  return set(dst, value, bytes, "cudaMemset");
}
cudaError_t cudaMemsetAsync(void* dst, int value, std::size_t bytes, cudaStream_t stream) {
  if (!detail::stream_is_valid(stream))
    return fail(cudaErrorInvalidResourceHandle, "cudaMemsetAsync on a destroyed stream");
  return set(dst, value, bytes, "cudaMemsetAsync");
}

// ---- streams ------------------------------------------------------------------------------

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  if (!stream) return fail(cudaErrorInvalidValue, "cudaStreamCreate: null pointer");
  *stream = new CUstream_st{flags};
  std::lock_guard<std::mutex> lock(g_handle_mutex);
  g_streams.insert(*stream);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  {
    std::lock_guard<std::mutex> lock(g_handle_mutex);
    if (!stream || !g_streams.erase(stream))
      return fail(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: not a live stream");
  }
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  return detail::stream_is_valid(stream)
             ? cudaSuccess
             : fail(cudaErrorInvalidResourceHandle, "cudaStreamSynchronize: not a live stream");
}
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  return cudaStreamSynchronize(stream);
}

namespace {
bool event_is_valid(cudaEvent_t event) {
  std::lock_guard<std::mutex> lock(g_handle_mutex);
  return event && g_events.count(event) != 0;
}
}  // namespace

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  if (!detail::stream_is_valid(stream) || !event_is_valid(event))
    return fail(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: not a live stream/event");
  return cudaSuccess;
}

// ---- events -------------------------------------------------------------------------------

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  if (!event) return fail(cudaErrorInvalidValue, "cudaEventCreate: null pointer");
  *event = new CUevent_st{flags, false, {}};
  std::lock_guard<std::mutex> lock(g_handle_mutex);
  g_events.insert(*event);
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  {
    std::lock_guard<std::mutex> lock(g_handle_mutex);
    if (!event || !g_events.erase(event))
      return fail(cudaErrorInvalidResourceHandle, "cudaEventDestroy: not a live event");
  }
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!event_is_valid(event) || !detail::stream_is_valid(stream))
    return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: not a live event/stream");
  event->recorded = true;
  event->time = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  return event_is_valid(event)
             ? cudaSuccess
             : fail(cudaErrorInvalidResourceHandle, "cudaEventSynchronize: not a live event");
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
  return cudaEventSynchronize(event);
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms) return fail(cudaErrorInvalidValue, "cudaEventElapsedTime: null pointer");
  if (!event_is_valid(start) || !event_is_valid(end) || !start->recorded || !end->recorded ||
      (start->flags & cudaEventDisableTiming) || (end->flags & cudaEventDisableTiming))
    return fail(cudaErrorInvalidResourceHandle,
                "cudaEventElapsedTime: both events must be live, recorded, and timing-enabled");
  *ms = std::chrono::duration<float, std::milli>(end->time - start->time).count();
  return cudaSuccess;
}

}  // namespace evo::emu
