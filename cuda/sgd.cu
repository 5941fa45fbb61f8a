// GPU SGD step with momentum and L2 weight decay, in place on one flat parameter tensor.
// Not a learning-rate schedule or an optimiser object: the trainer owns those.
//
// Ceiling: memory bandwidth; reads w, g, v and writes w, v (20 bytes per parameter).
#include "cuda/compat.h"

#include "cuda/common.cuh"
#include "evo/ops.h"

namespace evo::EVO_GPU_NS {

namespace {

// PyTorch's form (ops.h): v = momentum * v + (g + weight_decay * w);  w -= lr * v
__global__ void sgd_update_kernel(int n, float lr, float momentum, float weight_decay,
                                  float* __restrict__ w, const float* __restrict__ g,
                                  float* __restrict__ v) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const float vi = momentum * v[i] + (g[i] + weight_decay * w[i]);
    v[i] = vi;
    w[i] -= lr * vi;
  }
}

}  // namespace

void sgd_update(Context& ctx, int64_t n, float lr, float momentum, float weight_decay, float* w,
                const float* g, float* v) {
  check_int32(n, "sgd_update");
  if (n == 0) return;
  EVO_LAUNCH(sgd_update_kernel, blocks_for(n), kThreads, 0, stream_of(ctx), int(n), lr, momentum,
             weight_decay, w, g, v);
}

}  // namespace evo::EVO_GPU_NS
