// The per-device services every backend provides: memory, copies, streams, BLAS handles, sync.
// Not the layer ops (those come with their own dispatch table); just what tensors and contexts need.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "evo/device.h"

namespace evo {

enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };

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

  virtual void* create_stream(int ordinal) = 0;
  virtual void destroy_stream(void* stream) noexcept = 0;
  virtual void* create_blas(void* stream, int ordinal) = 0;
  virtual void destroy_blas(void* blas) noexcept = 0;

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
