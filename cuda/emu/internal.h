// What the emulator's .cpp files share: the allocation registry, stream checks, per-kernel limits,
// the error state (last, sticky, injected) and the capture gate every stream operation passes.
// Not included by kernels or by users of the emulator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "cuda/emu/runtime.h"

namespace evo::emu::detail {

// True when a GPU kernel could dereference `p`: inside (or one past the end of) memory from
// cudaMalloc or cudaMallocHost.
bool device_accessible(const void* p);
// Empty when [p, p + bytes) lies inside one device-accessible allocation, else why not (for
// people).
std::string check_device_range(const void* p, std::size_t bytes);
bool stream_is_valid(cudaStream_t stream);
// The stream's creation flags (cudaStreamNonBlocking or not); 0 for the legacy stream (nullptr).
unsigned stream_flags(cudaStream_t stream);
// The dynamic shared memory a launch of `kernel` may ask for (48 KiB unless raised by
// cudaFuncSetAttribute).
std::size_t dynamic_smem_limit(const void* kernel);
// Host threads that run blocks, the calling thread included (EVO_EMU_THREADS, else all cores).
int runner_count();
// Whether launches check that pointer arguments are device memory (EVO_EMU_CHECK_POINTERS=0: no).
bool pointer_checks_enabled();

// ---- errors (runtime.cpp) ---------------------------------------------------------------------
// Records `code` as the calling thread's last error and `why` for cudaGetErrorString; returns code.
cudaError_t set_error(cudaError_t code, std::string why);
// The sticky error of the calling thread's current device, or cudaSuccess while it is healthy.
// Every runtime call that needs the context starts with it.
cudaError_t sticky_error();
// Called once per kernel execution (EVO_LAUNCH, SGEMM, a graph's kernel node), just before it
// runs: cudaSuccess, or the error to fail it with: the device's sticky error, or an injected one
// whose turn it is (which then poisons the device when sticky). `what` names the kernel, for the
// message of cudaGetErrorString.
cudaError_t execution_fault(const char* what, const char* file, int line);

// ---- stream capture (graph.cpp) ----------------------------------------------------------------
// One recorded operation of a capture, replayed by cudaGraphLaunch.
struct GraphNode {
  std::string what;                  // for messages: "kernel 'k' launched at f.cu:12"
  std::function<cudaError_t()> run;  // does the operation; its error, or cudaSuccess
};

// What to do with an operation issued to a stream, decided by issue() under the capture rules.
enum class Issue : std::uint8_t {
  Run,       // execute it now
  Recorded,  // appended to the stream's capture: do nothing more
  Failed,    // `error` (already recorded by set_error); nothing was done
};
struct Issued {
  Issue what = Issue::Run;
  cudaError_t error = cudaSuccess;
  std::uint64_t capture = 0;  // the capture it was recorded into (Recorded only)
};
// The gate of every stream operation: the device's sticky error, a destroyed stream, the legacy
// stream while a blocking stream is capturing (cudaErrorStreamCaptureImplicit), an invalidated
// capture (cudaErrorStreamCaptureInvalidated), else Run, or Recorded after appending make_node()
// (called only then, under the capture lock, so it must not call back into the runtime's gates).
Issued issue(cudaStream_t stream, const char* call, const std::function<GraphNode()>& make_node);
// cudaMalloc, cudaFree, cudaMallocHost, cudaFreeHost: the "potentially unsafe" calls that the
// capture modes forbid (cudaThreadExchangeStreamCaptureMode's rules). cudaSuccess when allowed,
// else cudaErrorStreamCaptureUnsupported after invalidating the captures that forbid it.
cudaError_t unsafe_call(const char* call);
// A synchronous call that uses the legacy stream (cudaMemcpy, cudaMemset, cudaMemcpyToSymbol):
// cudaErrorStreamCaptureImplicit, invalidating them, while a blocking stream is capturing.
cudaError_t legacy_stream_call(const char* call);
// cudaStreamSynchronize and cudaStreamQuery: a capturing stream cannot be waited for.
cudaError_t stream_sync_gate(cudaStream_t stream, const char* call);
// cudaDeviceSynchronize: waits for every stream of the device, so for none while one captures.
cudaError_t device_sync_gate(const char* call);
// The capture `stream` is recording into (0 when none, or the legacy stream).
std::uint64_t capture_of(cudaStream_t stream);
// Whether capture `id` is still in progress (not ended).
bool capture_active(std::uint64_t id);
// Use of an event last recorded into capture `id` (query, synchronise, time): while that capture is
// in progress, cudaErrorCapturedEvent and the capture is invalidated; else cudaSuccess.
cudaError_t captured_event_use(std::uint64_t id, const char* call);
// cudaStreamWaitEvent(stream, event) for an event last recorded into capture `event_capture` (0:
// outside any capture).
cudaError_t wait_event_gate(cudaStream_t stream, std::uint64_t event_capture, unsigned flags);
// Whether `stream` is being captured (cudaStreamDestroy refuses to destroy it).
bool stream_capturing(cudaStream_t stream);

}  // namespace evo::emu::detail
