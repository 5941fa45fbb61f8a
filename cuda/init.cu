// GPU He et al. (2015) weight initialisation from the counter-based Philox generator.
// Not the choice of fan-in or of which tensors to reset: the model decides those.
//
// Element i is he_normal_draw(rng, i) (evo/draws.h, the same function the CPU calls), so the raw
// bits are the CPU's; the floats agree to an ulp or two (CUDA's logf/sinf/cosf round
// differently from glibc's).
#include "cuda/compat.h"

#include <cmath>

#include "cuda/common.cuh"
#include "evo/ops.h"
#include "evo/draws.h"

namespace evo::EVO_GPU_NS {

namespace {

__global__ void he_init_kernel(int64_t n, float stddev, PhiloxState rng, float* __restrict__ w) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    w[i] = he_normal_draw(rng, i, stddev);
}

}  // namespace

void he_init(Context& ctx, int64_t n, int fan_in, PhiloxState rng, float* w) {
  if (n == 0) return;
  if (fan_in < 1)
    throw Error("he_init: fan_in " + std::to_string(fan_in) +
                " must be >= 1 (inputs feeding one output: KH*KW*Cin for a convolution)");
  const float stddev = std::sqrt(2.0f / float(fan_in));  // on the host, as the CPU computes it
  EVO_LAUNCH(he_init_kernel, blocks_for(n), kThreads, 0, stream_of(ctx), n, stddev, rng, w);
}

}  // namespace evo::EVO_GPU_NS
