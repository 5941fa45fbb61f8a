// Example CUDA kernels that exercise the emulator (reduction, tiled matmul, histogram, votes,
// shuffles, atomics) and deliberately broken ones. Not library kernels: tests and teaching only.
#pragma once

#include <cstddef>
#include <vector>

namespace evo::emu::examples {
#include "cuda/examples/examples.inc"
}  // namespace evo::emu::examples

#if defined(EVO_HAVE_CUDA)
namespace evo::cuda::examples {
#include "cuda/examples/examples.inc"
}  // namespace evo::cuda::examples
#endif
