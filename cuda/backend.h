// Entry points of the GPU-like backends: the real CUDA one and the emulated one (same source).
// Not the backend interface itself: that is include/evo/backend.h.
#pragma once

#include "evo/backend.h"

namespace evo::emu {
DeviceBackend& gpu_backend();
}
#if defined(EVO_HAVE_CUDA)
namespace evo::cuda {
DeviceBackend& gpu_backend();
}
#endif
