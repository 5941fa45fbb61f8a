// Context: acquires a worker's stream, BLAS handle and arena, and gives them back in reverse.
// Not a scheduler: which worker runs what is the search's business.
#include "evo/context.h"

namespace evo {

Context::Context(Device device, uint64_t seed, uint32_t stream_id)
    : device_(device), backend_(&backend_for(device.kind)) {
  backend_->set_device(device.ordinal);
  stream_ = backend_->create_stream(device.ordinal);
  try {
    blas_ = backend_->create_blas(stream_, device.ordinal);
    arena_ = std::make_unique<Arena>(*backend_, device.ordinal, stream_);
    host_scratch_ = backend_->allocate_pinned(kHostScratchBytes);
  } catch (...) {
    arena_.reset();
    if (blas_) backend_->destroy_blas(blas_);
    backend_->destroy_stream(stream_);
    throw;
  }
  rng_.seed = seed;
  rng_.stream = stream_id;
}

Context::~Context() {
  arena_.reset();  // synchronises the stream before giving memory back
  backend_->deallocate_pinned(host_scratch_);
  if (blas_) backend_->destroy_blas(blas_);
  backend_->destroy_stream(stream_);
}

void Context::activate() { backend_->set_device(device_.ordinal); }

void Context::synchronize() { backend_->synchronize(stream_); }

}  // namespace evo
