// The emulated CUDA runtime: errors (last, sticky, injected on demand), devices, memory (with an
// allocation registry that catches copies and kernels a GPU would fault on), streams and events.
// Not the scheduler, not cuBLAS, not graphs (graph.cpp, whose capture gate every stream call here
// passes).
#include <sys/sysinfo.h>

#include <algorithm>
#include <atomic>
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
#include <vector>

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

// ---- sticky errors and injected faults ------------------------------------------------------
// A fault in a kernel (illegal address, trap, ...) breaks the GPU's context: CUDA answers every
// later call with it. Per device, as contexts are; the first fault wins, as on a GPU.
constexpr int kMaxDevices = 64;  // EVO_EMU_DEVICES is clamped to this
thread_local int t_device = 0;
std::atomic<bool> g_any_sticky{false};  // the fast path: one load per call on a healthy process
std::atomic<int> g_sticky[kMaxDevices];
std::mutex g_fault_mutex;
std::string g_sticky_why[kMaxDevices];  // under g_fault_mutex

struct Injection {
  cudaError_t code;
  int remaining;  // executions (allocations, for out of memory) still to succeed first
};
std::vector<Injection> g_injections;  // under g_fault_mutex
std::atomic<bool> g_injections_pending{false};

void poison(int device, cudaError_t code, const std::string& why) {
  std::lock_guard<std::mutex> lock(g_fault_mutex);
  int healthy = 0;
  if (g_sticky[device].compare_exchange_strong(healthy, int(code))) g_sticky_why[device] = why;
  g_any_sticky.store(true, std::memory_order_release);
}

// The pending injection whose turn it is for an allocation (or else a kernel execution), or
// cudaSuccess; counts this one for the others.
cudaError_t next_injection(bool allocation) {
  if (!g_injections_pending.load(std::memory_order_acquire)) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_fault_mutex);
  cudaError_t fired = cudaSuccess;
  for (auto it = g_injections.begin(); it != g_injections.end();) {
    if ((it->code == cudaErrorMemoryAllocation) != allocation) {
      ++it;
    } else if (it->remaining == 0 && fired == cudaSuccess) {
      fired = it->code;
      it = g_injections.erase(it);
    } else {
      it->remaining = std::max(0, it->remaining - 1);
      ++it;
    }
  }
  if (g_injections.empty()) g_injections_pending.store(false, std::memory_order_release);
  return fired;
}

// EVO_EMU_INJECT, once, at the first kernel execution or cudaMalloc.
void load_env_injections() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* v = std::getenv("EVO_EMU_INJECT");
    if (v && *v) {
      try {
        inject_errors(v);
      } catch (const EmuError& e) {
        throw EmuError(std::string("EVO_EMU_INJECT: ") + e.what());
      }
    }
  });
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
    case cudaErrorContained:
      return "uncorrectable error contained by the GPU";
    case cudaErrorIllegalState:
      return "the operation cannot be performed in the present state";
    case cudaErrorNotReady:
      return "device not ready";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources:
      return "too many resources requested for launch";
    case cudaErrorLaunchTimeout:
      return "the launch timed out and was terminated";
    case cudaErrorAssert:
      return "device-side assert triggered";
    case cudaErrorHardwareStackError:
      return "hardware stack error";
    case cudaErrorIllegalInstruction:
      return "an illegal instruction was encountered";
    case cudaErrorMisalignedAddress:
      return "misaligned address";
    case cudaErrorInvalidAddressSpace:
      return "operation not supported on global/shared address space";
    case cudaErrorInvalidPc:
      return "invalid program counter";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
    case cudaErrorTensorMemoryLeak:
      return "tensor memory not completely freed";
    case cudaErrorNotSupported:
      return "operation not supported";
    case cudaErrorMpsClientTerminated:
      return "the MPS client has been terminated by the server";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureMerge:
      return "operation would result in a merge of separate capture sequences";
    case cudaErrorStreamCaptureUnmatched:
      return "capture was not ended in the same stream as it began";
    case cudaErrorStreamCaptureUnjoined:
      return "capturing stream has unjoined work";
    case cudaErrorStreamCaptureIsolation:
      return "dependency created on uncaptured work in another stream";
    case cudaErrorStreamCaptureImplicit:
      return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorCapturedEvent:
      return "operation not permitted on an event last recorded in a capturing stream";
    case cudaErrorStreamCaptureWrongThread:
      return "attempt to terminate a thread-local capture sequence from another thread";
    case cudaErrorExternalDevice:
      return "an error occurred on an external device";
    case cudaErrorUnknown:
      return "unknown error";
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
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (const cudaError_t e = detail::unsafe_call(call)) return e;
  load_env_injections();
  if (!pinned && next_injection(true) != cudaSuccess)
    return fail(cudaErrorMemoryAllocation,
                std::string(call) + " of " + std::to_string(bytes) +
                    " bytes: injected out of memory (evo::emu::inject_error or EVO_EMU_INJECT)");
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

// On a poisoned device the memory is freed all the same (a GPU frees it with the context) and the
// sticky error returned, so that cleanup paths neither leak nor pass for healthy.
cudaError_t release(void* ptr, bool pinned, const char* call) {
  const cudaError_t sticky = detail::sticky_error();
  if (!sticky)
    if (const cudaError_t e = detail::unsafe_call(call)) return e;
  if (!ptr) return sticky;
  {
    std::lock_guard<std::mutex> lock(g_alloc_mutex);
    auto it = g_allocations.find(reinterpret_cast<std::uintptr_t>(ptr));
    if (it == g_allocations.end() || it->second.pinned != pinned)
      return sticky ? sticky
                    : fail(cudaErrorInvalidValue, std::string(call) + "(" + pointer_text(ptr) +
                                                      "): not a pointer returned by " +
                                                      (pinned ? "cudaMallocHost" : "cudaMalloc") +
                                                      ", or freed already");
    g_allocations.erase(it);
  }
  std::free(ptr);
  return sticky;
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

// cudaSuccess when the copy may go ahead, else the error a GPU would give (recorded).
cudaError_t check_copy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
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
  return cudaSuccess;
}

// Checks again, then copies: a graph's copy node runs this at every replay, so that memory freed
// since the capture is reported, as a GPU would fault on it.
cudaError_t copy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                 const char* call) {
  if (const cudaError_t e = check_copy(dst, src, bytes, kind, call)) return e;
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t check_set(void* dst, std::size_t bytes, const char* call) {
  if (bytes == 0) return cudaSuccess;
  const std::string problem = device_side_problem(dst, bytes, "destination");
  if (!problem.empty()) return fail(cudaErrorInvalidValue, std::string(call) + ": " + problem);
  return cudaSuccess;
}

cudaError_t set(void* dst, int value, std::size_t bytes, const char* call) {
  if (const cudaError_t e = check_set(dst, bytes, call)) return e;
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}

// ---- devices --------------------------------------------------------------------------------

// EVO_EMU_DEVICES, read at the first use unless set_device_count came first; -1 until then. An
// atomic rather than a function-local static, because set_device_count overwrites it.
std::atomic<int> g_device_count{-1};

int device_count() {
  int n = g_device_count.load(std::memory_order_acquire);
  if (n >= 0) return n;
  const char* v = std::getenv("EVO_EMU_DEVICES");
  const int from_env = std::clamp(v ? std::atoi(v) : 1, 0, kMaxDevices);
  // Whoever comes first wins: a concurrent set_device_count is not overwritten by the default.
  g_device_count.compare_exchange_strong(n, from_env, std::memory_order_acq_rel);
  return g_device_count.load(std::memory_order_acquire);
}

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
  std::uint64_t capture;  // the capture it was last recorded into; 0 when recorded outside one
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

unsigned stream_flags(cudaStream_t stream) {
  if (!stream) return 0;
  std::lock_guard<std::mutex> lock(g_handle_mutex);
  return g_streams.count(stream) ? stream->flags : 0;
}

cudaError_t set_error(cudaError_t code, std::string why) {
  return fail(code, std::move(why));
}

cudaError_t sticky_error() {
  if (!g_any_sticky.load(std::memory_order_acquire)) return cudaSuccess;
  return static_cast<cudaError_t>(g_sticky[t_device].load(std::memory_order_acquire));
}

cudaError_t execution_fault(const char* what, const char* file, int line) {
  load_env_injections();
  if (const cudaError_t e = sticky_error()) return e;
  const cudaError_t code = next_injection(false);
  if (code == cudaSuccess) return cudaSuccess;
  std::string why = std::string("injected ") + cudaGetErrorName(code) + " at " + what +
                    " launched at " + file + ":" + std::to_string(line) +
                    " (evo::emu::inject_error or EVO_EMU_INJECT)";
  if (is_sticky_cuda_error(code)) {
    poison(t_device, code, why);
    why += "; the device is unusable until the process ends, as on a GPU";
  }
  return fail(code, std::move(why));
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
  if (const cudaError_t e = sticky_error()) return e;
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
  if (const cudaError_t e = sticky_error()) return e;
  if (const cudaError_t e =
          legacy_stream_call(to_symbol ? "cudaMemcpyToSymbol" : "cudaMemcpyFromSymbol"))
    return e;
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
  if (error != cudaSuccess && error == detail::sticky_error()) {
    std::lock_guard<std::mutex> lock(g_fault_mutex);
    t_message =
        std::string(base_error_string(error)) + " (CUDA emulator: " + g_sticky_why[t_device] + ")";
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
    case cudaErrorContained:
      return "cudaErrorContained";
    case cudaErrorIllegalState:
      return "cudaErrorIllegalState";
    case cudaErrorIllegalAddress:
      return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources:
      return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchTimeout:
      return "cudaErrorLaunchTimeout";
    case cudaErrorAssert:
      return "cudaErrorAssert";
    case cudaErrorHardwareStackError:
      return "cudaErrorHardwareStackError";
    case cudaErrorIllegalInstruction:
      return "cudaErrorIllegalInstruction";
    case cudaErrorMisalignedAddress:
      return "cudaErrorMisalignedAddress";
    case cudaErrorInvalidAddressSpace:
      return "cudaErrorInvalidAddressSpace";
    case cudaErrorInvalidPc:
      return "cudaErrorInvalidPc";
    case cudaErrorTensorMemoryLeak:
      return "cudaErrorTensorMemoryLeak";
    case cudaErrorMpsClientTerminated:
      return "cudaErrorMpsClientTerminated";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureMerge:
      return "cudaErrorStreamCaptureMerge";
    case cudaErrorStreamCaptureUnmatched:
      return "cudaErrorStreamCaptureUnmatched";
    case cudaErrorStreamCaptureUnjoined:
      return "cudaErrorStreamCaptureUnjoined";
    case cudaErrorStreamCaptureIsolation:
      return "cudaErrorStreamCaptureIsolation";
    case cudaErrorStreamCaptureImplicit:
      return "cudaErrorStreamCaptureImplicit";
    case cudaErrorCapturedEvent:
      return "cudaErrorCapturedEvent";
    case cudaErrorStreamCaptureWrongThread:
      return "cudaErrorStreamCaptureWrongThread";
    case cudaErrorExternalDevice:
      return "cudaErrorExternalDevice";
    case cudaErrorUnknown:
      return "cudaErrorUnknown";
  }
  return "cudaErrorUnknown";
}

cudaError_t cudaGetLastError() {
  if (const cudaError_t e = detail::sticky_error()) return e;  // never cleared
  return std::exchange(t_last_error, cudaSuccess);
}
cudaError_t cudaPeekAtLastError() {
  if (const cudaError_t e = detail::sticky_error()) return e;
  return t_last_error;
}

// ---- errors on demand ---------------------------------------------------------------------

void inject_error(cudaError_t code, int after) {
  if (code == cudaSuccess || after < 0)
    throw EmuError("inject_error(" + std::to_string(int(code)) + ", " + std::to_string(after) +
                   "): give an error code other than cudaSuccess and a count >= 0 (0: the next "
                   "kernel execution, or cudaMalloc for cudaErrorMemoryAllocation, fails)");
  std::lock_guard<std::mutex> lock(g_fault_mutex);
  g_injections.push_back({code, after});
  g_injections_pending.store(true, std::memory_order_release);
}

void inject_errors(const std::string& spec) {
  static constexpr struct {
    const char* name;
    cudaError_t code;
  } kNames[] = {
      {"illegal-address", cudaErrorIllegalAddress},
      {"launch-failure", cudaErrorLaunchFailure},
      {"illegal-instruction", cudaErrorIllegalInstruction},
      {"misaligned-address", cudaErrorMisalignedAddress},
      {"assert", cudaErrorAssert},
      {"launch-timeout", cudaErrorLaunchTimeout},
      {"out-of-resources", cudaErrorLaunchOutOfResources},
      {"oom", cudaErrorMemoryAllocation},
  };
  const std::string accepted =
      "accepted: comma-separated NAME:N, NAME one of illegal-address, launch-failure, "
      "illegal-instruction, misaligned-address, assert, launch-timeout, out-of-resources, oom; N "
      "the number of kernel executions (cudaMalloc calls for oom) that succeed first, e.g. "
      "\"illegal-address:10\" or \"oom:0,launch-failure:3\"";
  std::vector<std::pair<cudaError_t, int>> parsed;
  std::size_t start = 0;
  while (start <= spec.size()) {
    const std::size_t end = std::min(spec.find(',', start), spec.size());
    const std::string item = spec.substr(start, end - start);
    const std::size_t colon = item.find(':');
    const std::string name = item.substr(0, colon);
    const std::string count = colon == std::string::npos ? "" : item.substr(colon + 1);
    cudaError_t code = cudaSuccess;
    for (const auto& n : kNames)
      if (name == n.name) code = n.code;
    char* rest = nullptr;
    const long after = count.empty() ? -1 : std::strtol(count.c_str(), &rest, 10);
    if (code == cudaSuccess || after < 0 || after > 1'000'000'000 || (rest && *rest))
      throw EmuError("'" + item + "' in '" + spec + "' is not an injection the emulator knows; " +
                     accepted);
    parsed.emplace_back(code, int(after));
    start = end + 1;
  }
  for (const auto& [code, after] : parsed) inject_error(code, after);
}

void reset_errors() {
  std::lock_guard<std::mutex> lock(g_fault_mutex);
  g_injections.clear();
  g_injections_pending.store(false, std::memory_order_release);
  for (int d = 0; d < kMaxDevices; ++d) {
    g_sticky[d].store(0, std::memory_order_release);
    g_sticky_why[d].clear();
  }
  g_any_sticky.store(false, std::memory_order_release);
  t_last_error = cudaSuccess;
}

// ---- devices ------------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue, "cudaGetDeviceCount: null pointer");
  *count = device_count();
  return device_count() > 0 ? cudaSuccess
                            : fail(cudaErrorNoDevice, "EVO_EMU_DEVICES=0 hides every device");
}

void set_device_count(int n) {
  if (n < 0 || n > kMaxDevices)
    throw EmuError("set_device_count(" + std::to_string(n) + "): the emulator has 0 to " +
                   std::to_string(kMaxDevices) + " devices");
  g_device_count.store(n, std::memory_order_release);
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
  return detail::device_sync_gate("cudaDeviceSynchronize");
}
// A sticky error survives it: CUDA documents that only a new process recovers
// (evo::emu::reset_errors is the emulator's stand-in).
cudaError_t cudaDeviceReset() {
  if (const cudaError_t e = detail::sticky_error()) return e;
  return detail::device_sync_gate("cudaDeviceReset");
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
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (!free_bytes || !total_bytes) return fail(cudaErrorInvalidValue, "cudaMemGetInfo: null");
  struct sysinfo info {};
  sysinfo(&info);
  *free_bytes = std::size_t(info.freeram) * info.mem_unit;
  *total_bytes = std::size_t(info.totalram) * info.mem_unit;
  return cudaSuccess;
}

// The synchronous calls use the legacy stream: refused while a blocking stream captures; while
// only non-blocking streams capture they run at once and are not part of any graph (as on CUDA).
cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (const cudaError_t e = detail::legacy_stream_call("cudaMemcpy")) return e;
  return copy(dst, src, bytes, kind, "cudaMemcpy");
}
// Checked when issued (a GPU refuses bad arguments at the call, captured or not); on a capturing
// stream, recorded with its pointers and size, and checked again at every replay.
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (const cudaError_t e = check_copy(dst, src, bytes, kind, "cudaMemcpyAsync")) return e;
  const detail::Issued issued = detail::issue(stream, "cudaMemcpyAsync", [=] {
    return detail::GraphNode{std::string("cudaMemcpyAsync ") + kind_name(kind) + " of " +
                                 std::to_string(bytes) + " bytes",
                             [=] {
                               return copy(dst, src, bytes, kind,
                                           "cudaMemcpyAsync (replayed by cudaGraphLaunch)");
                             }};
  });
  if (issued.what != detail::Issue::Run) return issued.error;
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* dst, int value, std::size_t bytes) {
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (const cudaError_t e = detail::legacy_stream_call("cudaMemset")) return e;
  return set(dst, value, bytes, "cudaMemset");
}
cudaError_t cudaMemsetAsync(void* dst, int value, std::size_t bytes, cudaStream_t stream) {
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (const cudaError_t e = check_set(dst, bytes, "cudaMemsetAsync")) return e;
  const detail::Issued issued = detail::issue(stream, "cudaMemsetAsync", [=] {
    return detail::GraphNode{
        "cudaMemsetAsync of " + std::to_string(bytes) + " bytes",
        [=] { return set(dst, value, bytes, "cudaMemsetAsync (replayed by cudaGraphLaunch)"); }};
  });
  if (issued.what != detail::Issue::Run) return issued.error;
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}

// ---- streams ------------------------------------------------------------------------------

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  if (!stream) return fail(cudaErrorInvalidValue, "cudaStreamCreate: null pointer");
  if (const cudaError_t e = detail::sticky_error()) return e;
  *stream = new CUstream_st{flags};
  std::lock_guard<std::mutex> lock(g_handle_mutex);
  g_streams.insert(*stream);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  const cudaError_t sticky = detail::sticky_error();
  if (!sticky && detail::stream_capturing(stream))
    return fail(cudaErrorStreamCaptureUnsupported,
                "cudaStreamDestroy: the stream is capturing; end the capture first "
                "(cudaStreamEndCapture)");
  {
    std::lock_guard<std::mutex> lock(g_handle_mutex);
    if (!stream || !g_streams.erase(stream))
      return sticky ? sticky
                    : fail(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: not a live stream");
  }
  delete stream;
  return sticky;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  return detail::stream_sync_gate(stream, "cudaStreamSynchronize");
}
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  return detail::stream_sync_gate(stream, "cudaStreamQuery");
}

namespace {
bool event_is_valid(cudaEvent_t event) {
  std::lock_guard<std::mutex> lock(g_handle_mutex);
  return event && g_events.count(event) != 0;
}
}  // namespace

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags) {
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (!detail::stream_is_valid(stream) || !event_is_valid(event))
    return fail(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: not a live stream/event");
  return detail::wait_event_gate(stream, event->capture, flags);
}

// ---- events -------------------------------------------------------------------------------

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  if (!event) return fail(cudaErrorInvalidValue, "cudaEventCreate: null pointer");
  if (const cudaError_t e = detail::sticky_error()) return e;
  *event = new CUevent_st{flags, false, {}, 0};
  std::lock_guard<std::mutex> lock(g_handle_mutex);
  g_events.insert(*event);
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  const cudaError_t sticky = detail::sticky_error();
  {
    std::lock_guard<std::mutex> lock(g_handle_mutex);
    if (!event || !g_events.erase(event))
      return sticky ? sticky
                    : fail(cudaErrorInvalidResourceHandle, "cudaEventDestroy: not a live event");
  }
  delete event;
  return sticky;
}
// On a capturing stream the record becomes a node that stamps the event at each replay; until the
// capture ends, the event stands for a point of the graph and cannot be waited for or timed.
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (!event_is_valid(event) || !detail::stream_is_valid(stream))
    return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: not a live event/stream");
  const detail::Issued issued = detail::issue(stream, "cudaEventRecord", [event] {
    return detail::GraphNode{"cudaEventRecord", [event] {
                               if (!event_is_valid(event))
                                 return fail(cudaErrorInvalidResourceHandle,
                                             "cudaEventRecord (replayed by cudaGraphLaunch): the "
                                             "event was destroyed after the capture");
                               event->recorded = true;
                               event->capture = 0;
                               event->time = std::chrono::steady_clock::now();
                               return cudaSuccess;
                             }};
  });
  if (issued.what == detail::Issue::Failed) return issued.error;
  if (issued.what == detail::Issue::Recorded) {
    event->capture = issued.capture;
    return cudaSuccess;
  }
  event->recorded = true;
  event->capture = 0;
  event->time = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (!event_is_valid(event))
    return fail(cudaErrorInvalidResourceHandle, "cudaEventSynchronize: not a live event");
  return detail::captured_event_use(event->capture, "cudaEventSynchronize");
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (!event_is_valid(event))
    return fail(cudaErrorInvalidResourceHandle, "cudaEventQuery: not a live event");
  return detail::captured_event_use(event->capture, "cudaEventQuery");
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms) return fail(cudaErrorInvalidValue, "cudaEventElapsedTime: null pointer");
  if (const cudaError_t e = detail::sticky_error()) return e;
  if (event_is_valid(start) && event_is_valid(end)) {
    if (const cudaError_t e = detail::captured_event_use(start->capture, "cudaEventElapsedTime"))
      return e;
    if (const cudaError_t e = detail::captured_event_use(end->capture, "cudaEventElapsedTime"))
      return e;
  }
  if (!event_is_valid(start) || !event_is_valid(end) || !start->recorded || !end->recorded ||
      (start->flags & cudaEventDisableTiming) || (end->flags & cudaEventDisableTiming))
    return fail(cudaErrorInvalidResourceHandle,
                "cudaEventElapsedTime: both events must be live, recorded, and timing-enabled");
  *ms = std::chrono::duration<float, std::milli>(end->time - start->time).count();
  return cudaSuccess;
}

}  // namespace evo::emu
