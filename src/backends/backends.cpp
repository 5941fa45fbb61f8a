// backend_for(): the one place that knows every backend linked into this binary (CPU always, the
// emulated CUDA backend always, real CUDA when built), like ops() for the layer ops. Nothing to
// register and nothing for a program to remember. Not the backends themselves (src/backend.cpp,
// cuda/backend.cu).
#include "cuda/backend.h"
#include "evo/error.h"

namespace evo {

DeviceBackend& backend_for(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::CPU:
      return cpu_backend();
    case DeviceKind::EMU:
      return emu::gpu_backend();
    case DeviceKind::CUDA:
#if defined(EVO_HAVE_CUDA)
      return cuda::gpu_backend();
#else
      break;
#endif
  }
  throw Error("the CUDA backend is not available: this evo was built without CUDA (configure "
              "with -DEVO_CUDA=ON on a machine with nvcc), or use --device cpu or emu");
}

}  // namespace evo
