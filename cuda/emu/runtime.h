// The emulated CUDA runtime and cuBLAS, host side: dim3 and vector types, errors (and errors on
// demand), memory, streams, events, graphs by stream capture, device queries, SGEMM over OpenBLAS.
// Not device code (that is device.h) and no macros.
#pragma once

// Safe to include anywhere, even next to <cuda_runtime.h>: every name lives in evo::emu, so that
// code inside namespace evo::emu (the .cu files built with -DEVO_EMULATE) resolves its unqualified
// cudaMalloc, dim3, cublasSgemm... here, while evo::cuda resolves them to the real runtime.
#include <cstddef>
#include <cstdint>
#include <string>

#include "evo/error.h"

namespace evo::emu {

// What the emulator throws for what a GPU would fault or hang on: a barrier some threads never
// reach, a bad launch configuration, too much shared memory, a host pointer passed to a kernel.
class EmuError : public Error {
 public:
  explicit EmuError(const std::string& what) : Error(what) {}
};

// ---- dimensions and vector types (layout and alignment as in CUDA's vector_types.h) ----------
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};

struct alignas(8) float2 {
  float x, y;
};
struct float3 {
  float x, y, z;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) int2 {
  int x, y;
};
struct int3 {
  int x, y, z;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) double2 {
  double x, y;
};

constexpr float2 make_float2(float x, float y) {
  return {x, y};
}
constexpr float3 make_float3(float x, float y, float z) {
  return {x, y, z};
}
constexpr float4 make_float4(float x, float y, float z, float w) {
  return {x, y, z, w};
}
constexpr int2 make_int2(int x, int y) {
  return {x, y};
}
constexpr int3 make_int3(int x, int y, int z) {
  return {x, y, z};
}
constexpr int4 make_int4(int x, int y, int z, int w) {
  return {x, y, z, w};
}
constexpr uint2 make_uint2(unsigned x, unsigned y) {
  return {x, y};
}
constexpr uint3 make_uint3(unsigned x, unsigned y, unsigned z) {
  return {x, y, z};
}
constexpr uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
  return {x, y, z, w};
}
constexpr double2 make_double2(double x, double y) {
  return {x, y};
}

// ---- errors (codes as in CUDA 12/13's driver_types.h) ---------------------------------------
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidSymbol = 13,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorContained = 226,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorIllegalState = 401,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchTimeout = 702,
  cudaErrorAssert = 710,
  cudaErrorHardwareStackError = 714,
  cudaErrorIllegalInstruction = 715,
  cudaErrorMisalignedAddress = 716,
  cudaErrorInvalidAddressSpace = 717,
  cudaErrorInvalidPc = 718,
  cudaErrorLaunchFailure = 719,
  cudaErrorTensorMemoryLeak = 721,
  cudaErrorNotSupported = 801,
  cudaErrorMpsClientTerminated = 810,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureMerge = 902,
  cudaErrorStreamCaptureUnmatched = 903,
  cudaErrorStreamCaptureUnjoined = 904,
  cudaErrorStreamCaptureIsolation = 905,
  cudaErrorStreamCaptureImplicit = 906,
  cudaErrorCapturedEvent = 907,
  cudaErrorStreamCaptureWrongThread = 908,
  cudaErrorExternalDevice = 911,
  cudaErrorUnknown = 999,
};
using cudaError_t = cudaError;

// CUDA's text for the code, plus, when the emulator raised it on this host thread (or it is the
// device's sticky error), why.
const char* cudaGetErrorString(cudaError_t error);
const char* cudaGetErrorName(cudaError_t error);
// Returns and clears the last error of the calling host thread; once the device has a sticky error
// (below), returns that one and never clears it, as CUDA does.
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();

// ---- errors on demand: tests of code that must survive a broken GPU ------------------------
// A GPU fails rarely and never on cue; these make the emulator fail the way it would.
//
// inject_error(code, after): the next `after` kernel executions run, the one after fails with
// `code` (0: the very next). A kernel execution is an EVO_LAUNCH, a cuBLAS SGEMM call (strided
// batched included: one each) or a kernel node of a graph replay; captured launches do not count
// until they run. The failing kernel does not run; EVO_LAUNCH throws evo::CudaError with code()
// == code. cudaErrorMemoryAllocation instead counts cudaMalloc calls (cudaMallocHost is host
// memory): `after` allocations succeed, the next returns cudaErrorMemoryAllocation, later ones
// succeed again (out of memory is an error of one call).
//
// A sticky code (evo::is_sticky_cuda_error: cudaErrorIllegalAddress, cudaErrorLaunchFailure,
// cudaErrorIllegalInstruction, cudaErrorMisalignedAddress, cudaErrorAssert, ...) poisons the
// calling thread's current device, as the fault does on a GPU: from then on every runtime call on
// that device returns it (cudaGetLastError too, without clearing it), every launch throws
// CudaError with it and every cuBLAS call fails, until the process ends or reset_errors(). The
// calls that still work are those that need no context: cudaGetDeviceCount, cudaSetDevice,
// cudaGetDevice, cudaGetDeviceProperties, cudaGetErrorString/Name. cudaFree, cudaStreamDestroy,
// cudaEventDestroy and the graph destroys release their object all the same and return the error
// (a GPU frees everything with the context), so that tests stay leak-free under ASan.
//
// Injections can be pending for several codes at once; each counts from when it was made.
void inject_error(cudaError_t code, int after);
// The same from text, as EVO_EMU_INJECT gives it (read at the first kernel execution or
// cudaMalloc): comma-separated NAME:N with NAME one of illegal-address, launch-failure,
// illegal-instruction, misaligned-address, assert, launch-timeout (sticky), out-of-resources
// (cudaErrorLaunchOutOfResources, not sticky) or oom, and N the count `after`, e.g.
// "oom:3,illegal-address:100". Throws EmuError, listing what is accepted, for anything else.
void inject_errors(const std::string& spec);
// Forgets pending injections and every device's sticky error: the emulator's stand-in for
// starting a new process (a GPU has none), for tests only.
void reset_errors();

// ---- devices ----------------------------------------------------------------------------------
// The fields evo and common CUDA code read, with the values of an H100 where a GPU property has no
// CPU meaning, and the emulator's own numbers where it has one (multiProcessorCount = host threads
// running blocks; totalGlobalMem = physical RAM).
struct cudaDeviceProp {
  char name[256];
  std::size_t totalGlobalMem;
  std::size_t sharedMemPerBlock;
  int regsPerBlock;
  int warpSize;
  std::size_t memPitch;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  std::size_t totalConstMem;
  int major;
  int minor;
  int multiProcessorCount;
  int integrated;
  int canMapHostMemory;
  int concurrentKernels;
  int ECCEnabled;
  int pciBusID;
  int pciDeviceID;
  int pciDomainID;
  int asyncEngineCount;
  int unifiedAddressing;
  int memoryBusWidth;
  int l2CacheSize;
  int persistingL2CacheMaxSize;
  int maxThreadsPerMultiProcessor;
  std::size_t sharedMemPerMultiprocessor;
  int regsPerMultiprocessor;
  int managedMemory;
  int cooperativeLaunch;
  std::size_t sharedMemPerBlockOptin;
  int maxBlocksPerMultiProcessor;
  std::size_t reservedSharedMemPerBlock;
};

// Limits the emulator enforces, as on an H100 (sm_90).
inline constexpr int kMaxThreadsPerBlock = 1024;
inline constexpr int kMaxBlockDimZ = 64;
inline constexpr std::size_t kSharedMemPerBlock = 48 * 1024;        // without opt-in
inline constexpr std::size_t kSharedMemPerBlockOptin = 227 * 1024;  // with cudaFuncSetAttribute

// One emulated device by default; EVO_EMU_DEVICES=N pretends there are N (sharing host memory), so
// that multi-GPU code paths run in CI.
cudaError_t cudaGetDeviceCount(int* count);
// Pretends there are n devices from now on (0..64, else EmuError), as EVO_EMU_DEVICES does at
// start-up; evo train --device emu --gpus 0-3 calls it. Streams, memory and sticky errors are kept;
// a thread whose current device is no longer there keeps it until its next cudaSetDevice.
void set_device_count(int n);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaDeviceReset();

enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};
namespace detail {
cudaError_t set_function_attribute(const void* kernel, cudaFuncAttribute attr, int value);
}
template <typename F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  return detail::set_function_attribute(reinterpret_cast<const void*>(kernel), attr, value);
}

// ---- memory -----------------------------------------------------------------------------------
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

// Device memory is host memory, 256-byte aligned like cudaMalloc's, filled with 0xFF bytes (NaN as
// float, -1 as int) because a GPU does not zero it either. Every allocation is registered, so that
// copies in the wrong direction or past an allocation's end, and kernels given host pointers, are
// reported as they would fault on a GPU.
cudaError_t cudaMalloc(void** ptr, std::size_t bytes);
template <typename T>
cudaError_t cudaMalloc(T** ptr, std::size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaFree(void* ptr);
// Pinned host memory: host memory that kernels may also read (mapped, as with UVA on a GPU).
cudaError_t cudaMallocHost(void** ptr, std::size_t bytes);
template <typename T>
cudaError_t cudaMallocHost(T** ptr, std::size_t bytes) {
  return cudaMallocHost(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemGetInfo(std::size_t* free_bytes, std::size_t* total_bytes);

struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct CUevent_st;
using cudaEvent_t = CUevent_st*;

cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* dst, int value, std::size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int value, std::size_t bytes, cudaStream_t stream = nullptr);

namespace detail {
cudaError_t copy_symbol(void* symbol, std::size_t symbol_bytes, const void* src, std::size_t bytes,
                        std::size_t offset, bool to_symbol);
}
// __device__ and __constant__ variables are ordinary globals under emulation.
template <typename T>
cudaError_t cudaMemcpyToSymbol(T& symbol, const void* src, std::size_t bytes,
                               std::size_t offset = 0, cudaMemcpyKind = cudaMemcpyHostToDevice) {
  return detail::copy_symbol(&symbol, sizeof(T), src, bytes, offset, true);
}
template <typename T>
cudaError_t cudaMemcpyFromSymbol(void* dst, const T& symbol, std::size_t bytes,
                                 std::size_t offset = 0, cudaMemcpyKind = cudaMemcpyDeviceToHost) {
  return detail::copy_symbol(const_cast<T*>(&symbol), sizeof(T), dst, bytes, offset, false);
}

// ---- streams and events -----------------------------------------------------------------------
// Work runs when it is issued, on the calling host thread (blocks spread over the emulator's host
// threads), so every stream is always idle and stream order holds trivially. That hides a missing
// synchronisation; run the GPU tests to catch those. The exception is a stream being captured into
// a graph (below): its work is recorded instead, and runs at cudaGraphLaunch.
inline constexpr unsigned cudaStreamDefault = 0;
inline constexpr unsigned cudaStreamNonBlocking = 1;
inline constexpr unsigned cudaEventDefault = 0;
inline constexpr unsigned cudaEventBlockingSync = 1;
inline constexpr unsigned cudaEventDisableTiming = 2;
inline constexpr unsigned cudaEventWaitDefault = 0;
inline constexpr unsigned cudaEventWaitExternal = 1;

cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamQuery(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags = 0);

cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventQuery(cudaEvent_t event);
// Host time between the two records: the emulated kernels' CPU time, nothing like a GPU's.
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

// ---- CUDA graphs by stream capture (graph.cpp) --------------------------------------------------
// Between cudaStreamBeginCapture and cudaStreamEndCapture, kernel launches, cudaMemcpyAsync,
// cudaMemsetAsync, cudaEventRecord, cuBLAS SGEMMs and cudaGraphLaunch on the stream are recorded,
// not run. A kernel node keeps a copy of the launch's argument values taken at capture (a later
// change of the host variables does not reach the graph), while the memory its pointers point to
// is read when the graph runs; a copy or memset node keeps its pointers and size (the bytes are
// read at replay); SGEMM keeps alpha and beta by value in CUBLAS_POINTER_MODE_HOST. Each
// cudaGraphLaunch replays the nodes in capture order, on the calling thread, before it returns.
//
// What CUDA forbids during a capture fails with CUDA's code and invalidates the capture, so that
// cudaStreamEndCapture then fails with cudaErrorStreamCaptureInvalidated and a null graph
// (cuda/README.md has the table, with where each rule comes from). One stream per capture: a fork
// into another stream through an event (cudaStreamWaitEvent) is not emulated and fails with
// cudaErrorNotSupported.
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};
enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2,
};
enum cudaGraphInstantiateFlags {
  cudaGraphInstantiateFlagAutoFreeOnLaunch = 1,
  cudaGraphInstantiateFlagUpload = 2,
  cudaGraphInstantiateFlagDeviceLaunch = 4,
  cudaGraphInstantiateFlagUseNodePriority = 8,
};
struct CUgraph_st;
using cudaGraph_t = CUgraph_st*;
struct CUgraphExec_st;
using cudaGraphExec_t = CUgraphExec_st*;

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status);
// The calling thread's interaction mode with captures (default global): which captures forbid its
// "potentially unsafe" calls (cudaMalloc, cudaFree, cudaMallocHost, cudaFreeHost).
cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode);
// Flags: 0, cudaGraphInstantiateFlagAutoFreeOnLaunch and cudaGraphInstantiateFlagUseNodePriority
// (nothing to do here: no allocation nodes, one order); Upload is cudaErrorInvalidValue as on
// CUDA (cudaGraphInstantiateWithParams only), DeviceLaunch cudaErrorNotSupported.
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);

// ---- cuBLAS (the subset evo uses), column-major exactly as cuBLAS, computed by OpenBLAS --------
enum cublasStatus_t {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_ARCH_MISMATCH = 8,
  CUBLAS_STATUS_MAPPING_ERROR = 11,
  CUBLAS_STATUS_EXECUTION_FAILED = 13,
  CUBLAS_STATUS_INTERNAL_ERROR = 14,
  CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 };
enum cublasPointerMode_t { CUBLAS_POINTER_MODE_HOST = 0, CUBLAS_POINTER_MODE_DEVICE = 1 };
enum cublasMath_t {
  CUBLAS_DEFAULT_MATH = 0,
  CUBLAS_TENSOR_OP_MATH = 1,
  CUBLAS_PEDANTIC_MATH = 2,
  CUBLAS_TF32_TENSOR_OP_MATH = 3,
};

struct cublasContext;
using cublasHandle_t = cublasContext*;

cublasStatus_t cublasCreate(cublasHandle_t* handle);
cublasStatus_t cublasDestroy(cublasHandle_t handle);
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream);
cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t* stream);
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode);
cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode);
cublasStatus_t cublasGetPointerMode(cublasHandle_t handle, cublasPointerMode_t* mode);
const char* cublasGetStatusName(cublasStatus_t status);
const char* cublasGetStatusString(cublasStatus_t status);

// C = alpha * op(A) * op(B) + beta * C; A, B, C column-major with leading dimensions lda, ldb, ldc.
// Arguments are validated as cuBLAS does (CUBLAS_STATUS_INVALID_VALUE); beta == 0 ignores C's old
// contents, NaN included.
cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float* alpha,
                           const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc);
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const float* alpha, const float* A, int lda,
                                         long long stride_a, const float* B, int ldb,
                                         long long stride_b, const float* beta, float* C, int ldc,
                                         long long stride_c, int batch_count);

// ---- the emulator itself ----------------------------------------------------------------------
struct EmuStats {
  std::uint64_t kernels = 0;           // launches that ran
  std::uint64_t blocks = 0;            // blocks run
  std::uint64_t threads = 0;           // emulated GPU threads run (fibers started)
  std::uint64_t context_switches = 0;  // fiber switches (barriers, warp intrinsics, exits)
  int host_threads = 0;                // host threads that run blocks (caller included)
  int max_concurrent_blocks = 0;       // most blocks seen running at once since the last reset
};
EmuStats emu_stats();
void reset_emu_stats();

// The order in which the threads of a block take turns between their synchronisation points
// (__syncthreads, warp intrinsics, __nanosleep, exit: a thread runs alone from one to the next).
// Any order is one a GPU may produce, so a kernel whose result depends on it has a race, e.g. a
// missing __syncthreads; running the kernel tests under several orders finds what one order hides.
//   Forward: thread 0, 1, 2... first; a barrier lets the thread that opened it go on first, then
//            the others in thread order (the emulator's order before there was a choice).
//   Reverse: the mirror image: the last thread first, a barrier's waiters in descending order.
//   Random:  every next thread drawn uniformly from those ready, by a generator seeded from
//            `seed`, the kernel's name and the block index: the same seed gives the same orders,
//            whatever the number of host threads.
// EVO_EMU_SCHEDULE sets it at the first launch: forward (default), reverse, random:SEED, or
// random (a seed from the clock, printed once on stderr so that the run can be repeated).
enum class ScheduleOrder : std::uint8_t { Forward, Reverse, Random };
struct Schedule {
  ScheduleOrder order = ScheduleOrder::Forward;
  std::uint64_t seed = 0;  // Random only
};
// "forward", "reverse", "random:SEED"; throws EmuError (saying what is accepted) for anything
// else. A bare "random" draws a seed from the clock.
Schedule parse_schedule(const std::string& text);
std::string schedule_name(const Schedule& schedule);  // "random:42"
// The schedule launches use: set_schedule's, else EVO_EMU_SCHEDULE's (throws EmuError when that is
// malformed), else forward. Change it between launches: a launch uses the one it started with.
Schedule current_schedule();
void set_schedule(const Schedule& schedule);

}  // namespace evo::emu
