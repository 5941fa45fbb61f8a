// Registers the GPU-like backends linked into this binary (emu always, cuda when built).
// Not part of evo_core, which must not depend on the libraries built from cuda/.
#include "cuda/backend.h"

namespace evo {

void register_backends() {
  register_backend(DeviceKind::EMU, &emu::gpu_backend());
#if defined(EVO_HAVE_CUDA)
  register_backend(DeviceKind::CUDA, &cuda::gpu_backend());
#endif
}

}  // namespace evo
