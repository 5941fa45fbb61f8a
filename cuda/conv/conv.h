// The convolution kernels' extras beyond ops.h: run-time choice of the kernel version, and each
// version callable by number (tests, benchmarks). Not the ops themselves: those are in ops.h.
#pragma once

#include "evo/ops.h"

namespace evo {

// The versions in cuda/conv/N_*.cu, by number: 1 direct, 2 shared-memory tiled implicit GEMM,
// 3 register-blocked implicit GEMM (the default), all FP32; and 4, the implicit GEMM on tensor
// cores in TF32 (opt-in: its inputs are rounded to a 10-bit mantissa, so it is not among the FP32
// versions that tests hold to FP32 tolerances). Each covers all three passes.
inline constexpr int kConvVersionCount = 3;  // the FP32 versions, 1..3
inline constexpr int kConvTensorCoreVersion = 4;
inline constexpr int kConvDefaultVersion = 3;

}  // namespace evo

namespace evo::emu {
#include "cuda/conv/conv.inc"
}  // namespace evo::emu

#if defined(EVO_HAVE_CUDA)
namespace evo::cuda {
#include "cuda/conv/conv.inc"
}  // namespace evo::cuda
#endif
