// The per-device services every backend provides: memory, copies, streams, BLAS handles, sync.
// Not the layer ops (those come with their own dispatch table); just what tensors and contexts need.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "evo/device.h"

namespace evo {

enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };

// Devices that add up buffers together, for data-parallel training: NCCL on GPUs, the emulator's
// NCCL (cuda/emu/nccl.h) on emu. Rank r is the r-th device the communicator was made for; its
// calls come from the host thread that drives that device, on that device's stream, and every
// rank must make the same calls in the same order (a rank that skips one hangs the others on a
// GPU). Failures throw evo::Error with NCCL's code and reason.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int size() const = 0;
  // The calls of this host thread between the two run as one (ncclGroupStart/End): one launch for
  // many tensors.
  virtual void group_start() = 0;
  virtual void group_end() = 0;
  // In `rank`'s stream order: buf[i] = the sum over ranks of buf[i] (mean: the sum / size()).
  virtual void all_reduce(int rank, float* buf, std::size_t count, bool mean, void* stream) = 0;
  // In `rank`'s stream order: buf = root's buf on every rank.
  virtual void broadcast(int rank, float* buf, std::size_t count, int root, void* stream) = 0;
  // After one rank failed: makes every rank's pending and later collectives fail instead of
  // waiting for it (ncclCommAbort). Any thread may call it, once or more.
  virtual void abort() noexcept = 0;
};

// Implemented three times: CPU (plain host memory), CUDA (the real runtime) and EMU (the same
// source as CUDA, compiled against the emulator). Streams and BLAS handles are opaque here so that
// public headers need no CUDA header: they are cudaStream_t and cublasHandle_t underneath.
class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;

  // Makes `ordinal` current for the calling host thread (cudaSetDevice); a no-op on the CPU.
  virtual void set_device(int ordinal) = 0;
  // 256-byte aligned; throws evo::Error (or CudaError) when out of memory.
  virtual void* allocate(std::size_t bytes, int ordinal) = 0;
  virtual void deallocate(void* ptr, int ordinal) noexcept = 0;
  // Stream-ordered copy/fill; `stream` may be null (the default stream).
  virtual void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind, void* stream) = 0;
  virtual void fill_zero(void* dst, std::size_t bytes, void* stream) = 0;
  virtual void synchronize(void* stream) = 0;

  // Page-locked host memory (cudaMallocHost), for the few device-to-host reads of a step: a copy
  // into pageable memory is staged by the driver through its own pinned buffer, behind a lock
  // that many workers on one GPU would share. Plain memory on the CPU.
  virtual void* allocate_pinned(std::size_t bytes) = 0;
  virtual void deallocate_pinned(void* ptr) noexcept = 0;

  virtual void* create_stream(int ordinal) = 0;
  virtual void destroy_stream(void* stream) noexcept = 0;
  virtual void* create_blas(void* stream, int ordinal) = 0;
  virtual void destroy_blas(void* blas) noexcept = 0;

  // CUDA graphs by stream capture: the work queued on `stream` between begin_capture and
  // end_capture is recorded, not run (thread-local mode: other workers' threads may allocate
  // meanwhile); end_capture returns it instantiated (a cudaGraphExec_t), launch_graph replays it
  // on a stream, destroy_graph frees it. What a capture forbids (a synchronisation, a host read,
  // an allocation) throws CudaError at end_capture at the latest. The CPU backend has none:
  // begin_capture throws evo::Error.
  virtual void begin_capture(void* stream) = 0;
  virtual void* end_capture(void* stream) = 0;
  virtual void launch_graph(void* graph, void* stream) = 0;
  virtual void destroy_graph(void* graph) noexcept = 0;

  // One communicator over these device ordinals (distinct), rank r on ordinals[r]. The CPU
  // backend has none (throws evo::Error saying what to use instead), nor a CUDA build without
  // NCCL.
  virtual std::unique_ptr<Communicator> create_communicator(const std::vector<int>& ordinals) = 0;

  // The devices this backend can see (for CUDA: what cudaGetDeviceCount reports, with the reason
  // when it reports none; never throws).
  virtual GpuInventory inventory() = 0;
};

// CPU threads the ops called from this host thread use (OpenMP's pool, set per thread, so each
// search worker sets its own; OpenBLAS is kept single-threaded: src/cpu/blas.h says why). The CPU
// backend's one threading knob, so callers need neither omp.h nor cblas.h.
void set_cpu_threads(int threads);

// The backend serving `kind`: CPU, the emulated CUDA backend, or real CUDA. Defined in
// evo_backends (src/backends/backends.cpp), which links all of them, so there is nothing to
// register. Throws evo::Error for CUDA in a build without it.
DeviceBackend& backend_for(DeviceKind kind);
// The CPU backend alone (src/backend.cpp), for backend_for().
DeviceBackend& cpu_backend();

}  // namespace evo
