// One worker's execution context: its device, stream, BLAS handle, workspace arena and RNG.
// Not shared between threads: each worker (one per GPU stream) owns exactly one, RAII.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "evo/arena.h"
#include "evo/backend.h"
#include "evo/device.h"
#include "evo/philox.h"

namespace evo {

class Context {
 public:
  // `seed` names this worker's random sequence; `stream_id` separates workers sharing a seed.
  explicit Context(Device device, uint64_t seed = 0, uint32_t stream_id = 0);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  Device device() const { return device_; }
  DeviceBackend& backend() const { return *backend_; }
  // cudaStream_t / cublasHandle_t underneath on CUDA and EMU; null on the CPU.
  void* stream() const { return stream_; }
  void* blas() const { return blas_; }
  Arena& arena() { return *arena_; }
  // kHostScratchBytes of page-locked host memory for this worker's device-to-host reads (the
  // loss and accuracy of a check): no staging copy, no driver lock shared with other workers.
  static constexpr std::size_t kHostScratchBytes = 256;
  void* host_scratch() const { return host_scratch_; }
  PhiloxState& rng() { return rng_; }

  // Makes this context's device current on the calling thread (workers call it once).
  void activate();
  // Waits for all work queued on the stream.
  void synchronize();

 private:
  Device device_;
  DeviceBackend* backend_;
  void* stream_ = nullptr;
  void* blas_ = nullptr;
  std::unique_ptr<Arena> arena_;
  void* host_scratch_ = nullptr;
  PhiloxState rng_;
};

}  // namespace evo
